"""The pieces of the FateZero graph that the SD and the Wan graphs share.

Node ids are fixed across all workflows (video 2, prompts 4-8, inversion 9, fusion 10,
sampler 11, decode and save 12-14, blend mask 15-17, attention preview 40-41), so the
pieces can link to each other by id whatever loads the model.
"""
from __future__ import annotations

from .clips import Clip
from .graph import GROUP_COLORS, PROMPT_COLOR, SOURCE_COLOR, X0, X1, X2, X3, X4, Group, Node


def load_video(clip: Clip, pos: tuple, frames: int, start: int, nth: int, width: int, height: int) -> Node:
    """Node 2: ``frames`` frames of ``clip`` from ``start``, every ``nth``, cropped to ``width`` x ``height``."""
    return Node(2, "FateZeroLoadVideo", pos, (360, 560),
                {"video": clip.file, "frame_count": frames, "start_frame": start, "every_nth": nth, "width": width,
                 "height": height, "resize": "center crop"})


def prompt_nodes(source: str, target: str, clip: tuple, negative: str, negative_title: str) -> list[Node]:
    """Nodes 4-8: one text node per prompt feeds the encoder and the FateZero nodes alike."""
    return [
        Node(4, "PrimitiveStringMultiline", (X1 + 20, 80), (400, 110), {"value": source},
             title="Source prompt (describes the video)", color=SOURCE_COLOR),
        Node(5, "PrimitiveStringMultiline", (X1 + 20, 230), (400, 110), {"value": target},
             title="Target prompt (the edit)", color=PROMPT_COLOR),
        Node(6, "CLIPTextEncode", (X1 + 20, 380), (400, 90), {"text": source}, {"text": (4, 0), "clip": clip},
             title="Encode source prompt", color=SOURCE_COLOR),
        Node(7, "CLIPTextEncode", (X1 + 20, 510), (400, 90), {"text": target}, {"text": (5, 0), "clip": clip},
             title="Encode target prompt", color=PROMPT_COLOR),
        Node(8, "CLIPTextEncode", (X1 + 20, 640), (400, 90), {"text": negative}, {"clip": clip}, title=negative_title),
    ]


def fusion_node(node_id: int, pos: tuple, size: tuple, model: tuple, clip: tuple, *, source: str, target: str,
                cross: float, self_: float, mapping: str, reweight: str, cross_words: str = "",
                title: str | None = None) -> Node:
    """An attention fusion on ``model``, fed by the inversion's store (node 9) and the prompt nodes 4-5."""
    return Node(node_id, "FateZeroAttentionFusion", pos, size,
                {"source_prompt": source, "target_prompt": target, "cross_replace_steps": cross,
                 "self_replace_steps": self_, "mapping": mapping, "reweight": reweight,
                 "cross_replace_words": cross_words, "fused_blocks": "auto", "source_latents": "inverted"},
                {"model": model, "attention_store": (9, 1), "clip": clip, "source_prompt": (4, 0),
                 "target_prompt": (5, 0)}, title=title)


def decode_and_save(vae: tuple, fps: float, prefix: str) -> list[Node]:
    """Nodes 12-14: the edited latent (sampler 11) decoded and saved as a video at ``fps``."""
    return [
        Node(12, "VAEDecode", (X4 + 20, 80), (210, 46), links={"samples": (11, 0), "vae": vae}),
        Node(13, "CreateVideo", (X4 + 20, 170), (300, 78), {"fps": fps}, {"images": (12, 0), "fps": (2, 1)}),
        Node(14, "SaveVideo", (X4 + 20, 300), (400, 520),
             {"filename_prefix": prefix, "format": "auto", "codec": "auto"}, {"video": (13, 0)}),
    ]


def stage_groups(inputs_title: str, inputs_height: int, invert_height: int, edit_height: int) -> list[Group]:
    """Groups 1-5, one a column of the layout, in the order the graph runs."""
    return [
        Group(inputs_title, (X0, 0, 400, inputs_height), GROUP_COLORS["input"]),
        Group("2. Prompts", (X1, 0, 440, 770), GROUP_COLORS["prompts"]),
        Group("3. Invert (capture attention)", (X2, 0, 440, invert_height), GROUP_COLORS["invert"]),
        Group("4. Edit (fused attention)", (X3, 0, 420, edit_height), GROUP_COLORS["edit"]),
        Group("5. Decode and save", (X4, 0, 440, 850), GROUP_COLORS["save"]),
    ]


def attention_preview(clip: tuple, source: str, blend: dict, x: int, y: int) -> list[Node]:
    """The attention preview beside the blend mask (node 40, Preview Image 41): each source word's
    heat map over the loaded frames and the blend mask at its tau outlined, to choose the words."""
    return [
        Node(40, "FateZeroAttentionPreview", (x, y), (400, 330),
             {"source_prompt": source, "words": "", "step": -1, "tau": blend["tau"], "blend_words": blend["words"],
              "max_frames": 16},
             {"attention_store": (9, 1), "clip": clip, "source_prompt": (4, 0), "images": (2, 0)},
             title="FateZero Attention Preview (choose blend words and tau)"),
        Node(41, "PreviewImage", (x, y + 370), (400, 300), links={"images": (40, 0)}),
    ]


def add_blend_branch(nodes: list[Node], groups: list[Group], *, source: str, blend: dict, clip: tuple,
                     prefix: str, y: int, group_y: int) -> None:
    """Add the blend mask (nodes 15-17, into the fusion node 10) and its attention preview below
    the inversion, from ``y`` down, in group 3b from ``group_y``."""
    nodes += [
        Node(15, "FateZeroBlendMask", (X2 + 20, y), (400, 230),
             {"source_prompt": source, "blend_words": blend["words"], "tau": blend["tau"],
              "latent_blend": blend["latent_blend"], "target_blend_words": blend["target_words"]},
             {"attention_store": (9, 1), "clip": clip, "source_prompt": (4, 0)}),
        Node(16, "MaskToImage", (X2 + 20, y + 270), (260, 26), links={"mask": (15, 1)}),
        Node(17, "SaveImage", (X2 + 20, y + 340), (400, 360), {"filename_prefix": prefix + "_mask"},
             {"images": (16, 0)}, title="Save blend mask preview"),
        *attention_preview(clip, source, blend, X2 + 20, y + 740),
    ]
    next(n for n in nodes if n.id == 10).links["blend_mask"] = (15, 0)
    groups.append(Group("3b. Blend mask and attention preview", (X2, group_y, 440, 1500), GROUP_COLORS["blend"]))
