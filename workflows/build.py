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


def attention_preview(clip: tuple, blend: dict, x: int, y: int) -> list:
    """The attention preview beside the blend mask (node 40, Preview Image 41): each source word's
    heat map over the loaded frames and the blend mask at its tau outlined, to choose the words."""
    return [
        Node(40, "FateZeroAttentionPreview", (x, y), (400, 330),
             {"source_prompt": JEEP, "words": "", "step": -1, "tau": blend["tau"], "blend_words": blend["words"],
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
VIDEO = "bikes.mp4"                                # placeholder: put your clip in ComfyUI/input
JEEP = "a silver jeep driving down a curvy road in the countryside"
PROMPT_COLOR = ("#232", "#353")
SOURCE_COLOR = ("#223", "#335")
NOTE_COLOR = ("#432", "#653")
GROUP_COLORS = {"input": "#3f789e", "prompts": "#8A8", "control": "#3f8f8f", "invert": "#b06634",
                "blend": "#a1309b", "edit": "#88A", "save": "#b58b2a"}

# Columns of the layout (canvas units): left to right in the order the graph runs.
X0, X1, X2, X3, X4 = 0, 420, 880, 1340, 1780
NOTE_X = -460


def edit_graph(*, source: str, target: str, cross: float, self_: float, mapping: str, reweight: str,
               cross_words: str, prefix: str, blend: dict | None, frames: int = 8, width: int = 512,
               height: int = 512, window: int = 0, checkpoint: str = CHECKPOINT) -> tuple[list, list]:
    """The FateZero editing graph; ``blend`` adds the blend-mask branch with its preview."""
    n = [
        # 1. model and video
        Node(1, "CheckpointLoaderSimple", (X0 + 20, 80), (360, 98), {"ckpt_name": checkpoint}),
        Node(2, "FateZeroLoadVideo", (X0 + 20, 230), (360, 560),
             {"video": VIDEO, "frame_count": frames, "start_frame": 0, "every_nth": 1, "width": width,
              "height": height, "resize": "center crop"}),
        Node(3, "VAEEncode", (X0 + 20, 830), (210, 46), links={"pixels": (2, 0), "vae": (1, 2)}),
        # 2. prompts: one text node per prompt feeds the encoder and the FateZero nodes alike
        Node(4, "PrimitiveStringMultiline", (X1 + 20, 80), (400, 110), {"value": source},
             title="Source prompt (describes the video)", color=SOURCE_COLOR),
        Node(5, "PrimitiveStringMultiline", (X1 + 20, 230), (400, 110), {"value": target},
             title="Target prompt (the edit)", color=PROMPT_COLOR),
        Node(6, "CLIPTextEncode", (X1 + 20, 380), (400, 90), {"text": source}, {"text": (4, 0), "clip": (1, 1)},
             title="Encode source prompt", color=SOURCE_COLOR),
        Node(7, "CLIPTextEncode", (X1 + 20, 510), (400, 90), {"text": target}, {"text": (5, 0), "clip": (1, 1)},
             title="Encode target prompt", color=PROMPT_COLOR),
        Node(8, "CLIPTextEncode", (X1 + 20, 640), (400, 90), {"text": ""}, {"clip": (1, 1)},
             title="Encode negative prompt (empty)"),
        # 3. inversion
        Node(9, "FateZeroDDIMInversion", (X2 + 20, 80), (400, 294),
             {"steps": 50, "temporal_mode": "middle", "temporal_min_channels": 640, "video_groupnorm": True,
              "clean_sigma": "alphas_cumprod[0] (authors)", "store_mode": "auto", "cache_replace_steps": 0.8,
              "window": window, "flow_inversion": "fixed-point", "fixed_point_iterations": 1, "blend_blocks": "auto",
              "expert_boundary": 0.875},
             {"model": (1, 0), "source_conditioning": (6, 0), "latent": (3, 0)}),
        # 4. fused editing
        Node(10, "FateZeroAttentionFusion", (X3 + 20, 80), (380, 322),
             {"source_prompt": source, "target_prompt": target, "cross_replace_steps": cross,
              "self_replace_steps": self_, "mapping": mapping, "reweight": reweight, "cross_replace_words": cross_words,
              "fused_blocks": "auto"},
             {"model": (1, 0), "attention_store": (9, 1), "clip": (1, 1), "source_prompt": (4, 0),
              "target_prompt": (5, 0)}),
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
        n += [
            Node(15, "FateZeroBlendMask", (X2 + 20, 460), (400, 230),
                 {"source_prompt": source, "blend_words": blend["words"], "tau": blend["tau"],
                  "latent_blend": blend["latent_blend"], "target_blend_words": blend["target_words"]},
                 {"attention_store": (9, 1), "clip": (1, 1), "source_prompt": (4, 0)}),
            Node(16, "MaskToImage", (X2 + 20, 730), (260, 26), links={"mask": (15, 1)}),
            Node(17, "SaveImage", (X2 + 20, 800), (400, 360), {"filename_prefix": prefix + "_mask"},
                 {"images": (16, 0)}, title="Save blend mask preview"),
        ]
        n[9].links["blend_mask"] = (15, 0)
        n += attention_preview((1, 1), blend, X2 + 20, 1200)
        groups.append(Group("3b. Blend mask and attention preview", (X2, 390, 440, 1500),
                            GROUP_COLORS["blend"]))
    return n, groups


COMMON_NOTE = """\
How to run: put your clip in ComfyUI/input and pick it in FateZero Load Video (bikes.mp4 is a \
placeholder), pick your checkpoint in Load Checkpoint (SD1.5 for the authors' settings; SD 2.x and \
SDXL work at their own size), then Queue. The edited video lands in ComfyUI/output/fatezero/.

FateZero Load Video
- frame_count 8, width/height 512, resize center crop: the authors' size on SD1.5 (SDXL: 1024, \
SD 2.x 768 v-prediction: 768, each family's native size). Memory and time grow \
with frames x pixels; 256x256 or 4 frames are a quick first try.
- start_frame / every_nth: which frames of the clip (every_nth 2 skips every other frame).

Prompts
- Source prompt: describes the input video as it is. It feeds the inversion's CLIP Text Encode AND \
the FateZero nodes, which check that it is the prompt the video was inverted with.
- Target prompt: the source with your edit; it feeds the sampler's positive prompt and the fusion node.
- Negative prompt: empty, as in the authors' runs.

FateZero DDIM Inversion
- steps 50 (the authors'; 10 is their fast setting for style edits). This is the ONE place to set \
the steps: the edit takes them from the inversion's edit_sigmas output, so the sampler has no steps \
of its own.
- temporal_mode middle, temporal_min_channels 640: each frame's self-attention takes keys and values \
from the middle frame in the wide UNet blocks (the authors' style/attribute setting).
- video_groupnorm true, clean_sigma alphas_cumprod[0]: as in the authors' code.
- store_mode auto: keeps the source row's attention inputs in CPU memory when they take at most \
half the free memory (editing then costs about what plain sampling costs), else recomputes them \
(smallest store). The same edit either way. cache_replace_steps 0.8 covers the fusion fractions below.

SamplerCustom: sigmas = the inversion's edit_sigmas (the inversion's steps on the ddim_uniform \
grid, ending at alphas_cumprod[0] as the authors' schedule does), sampler = KSamplerSelect ddim, \
latent_image = the inverted latent, model = the fusion node's MODEL, add_noise false (the inverted \
latent is the noise; the seed is unused), cfg 7.5. Other samplers do not match the inversion.
Alternative: KSampler (Advanced) with add_noise disable, the inversion's steps, sampler ddim, \
scheduler ddim_uniform, start_at_step 0, end_at_step 10000 also works, but its schedule ends at \
sigma 0 instead of alphas_cumprod[0] (a small difference in the last step), and its steps must be \
kept equal to the inversion's by hand.

Create Video takes its fps from Load Video's frame_rate; Save Video writes an mp4."""


def note_text(title: str, fusion_help: str, extra: str = "") -> str:
    return f"{title}\n\n{COMMON_NOTE}\n\nFateZero Attention Fusion\n{fusion_help}" + (f"\n\n{extra}" if extra else "")


def note(text: str) -> Node:
    return Node(100, "Note", (NOTE_X, 0), (420, 1080), {"text": text}, color=NOTE_COLOR,
                title="Read me: what each setting does")


def style_edit() -> Workflow:
    target = "watercolor painting of " + JEEP
    nodes, groups = edit_graph(source=JEEP, target=target, cross=0.8, self_=0.8, mapping="refine",
                               reweight="watercolor:10", cross_words="", prefix="fatezero/style_watercolor_jeep",
                               blend=None)
    nodes.append(note(note_text(
        "FateZero style edit: a silver jeep -> watercolor painting (the authors' 'jeep watercolor' example).",
        "- cross_replace_steps 0.8: for the first 80% of the steps the target's cross-attention is built "
        "from the source's maps, keeping the layout.\n"
        "- self_replace_steps 0.8: for the first 80% of the steps self-attention comes from the source "
        "(structure and motion).\n"
        "- mapping refine: the target adds words ('watercolor painting of'); refine aligns the shared "
        "words and lets the new ones keep their own attention ('auto' picks this too).\n"
        "- reweight watercolor:10: the style word's cross-attention x10, as the authors do for style words.\n"
        "- cross_replace_words: empty (per-word override of cross_replace_steps, 'word:fraction').")))
    return Workflow("fatezero_style_edit", "style edit: watercolor jeep", nodes, groups)


def attribute_edit() -> Workflow:
    source = "a brown bear walking on the rock against a wall"
    target = "a red tiger walking on the rock against a wall"
    nodes, groups = edit_graph(source=source, target=target, cross=0.7, self_=0.7, mapping="replace",
                               reweight="", cross_words="", prefix="fatezero/attribute_bear_to_tiger", blend=None)
    nodes.append(note(note_text(
        "FateZero attribute edit: a brown bear -> a red tiger (word swap, the authors' bear example). "
        "Use a clip of a bear in place of bikes.mp4.",
        "- cross_replace_steps 0.7, self_replace_steps 0.7: the authors' values for attribute edits; lower "
        "values let the new words change more, higher keep more of the source.\n"
        "- mapping replace: a word swap, both prompts have the same number of words ('brown bear' -> 'red tiger'); "
        "each target word takes the source word's attention at its place.\n"
        "- reweight: empty (no word emphasised); cross_replace_words: empty.")))
    return Workflow("fatezero_attribute_edit", "attribute edit: bear to tiger", nodes, groups)


# The local edits: a silver jeep -> a red jeep, with a blend mask on the jeep's source words.
LOCAL_TARGET = JEEP.replace("silver", "red")
LOCAL_BLEND = {"words": "silver, jeep", "tau": 0.3, "latent_blend": False, "target_words": ""}
LOCAL_FUSION_HELP = (
    "- cross_replace_steps 0.7, self_replace_steps 0.7, mapping replace: a word swap ('silver' -> 'red').\n"
    "- blend_mask (from FateZero Blend Mask): inside the mask the edit keeps its own self-attention "
    "(the jeep may change), outside it takes the source's (background, motion).")
BLEND_NOTE = (
    "FateZero Blend Mask\n"
    "- blend_words 'silver, jeep': the SOURCE words of the object you edit (its noun, plus the adjective "
    "you change).\n"
    "- tau 0.3: threshold on the normalised cross-attention of those words (the authors: 0.3; the paper "
    "0.2-0.3). Lower grows the mask, 1.0 empties it.\n"
    "- latent_blend false (the authors' default): true also keeps the latent outside the mask equal to the "
    "inverted video between 20% and 80% of the steps; then name the new object's TARGET words in "
    "target_blend_words (e.g. 'red, jeep'). Not for style edits.\n"
    "- mask_preview -> Convert Mask to Image -> Save Image: one picture per frame in "
    "ComfyUI/output/fatezero/: white where the pixel is in the mask at every step, grey at some steps, "
    "black never. Check that it covers the object and not the background.")


def local_graph(prefix: str) -> tuple[list, list]:
    return edit_graph(source=JEEP, target=LOCAL_TARGET, cross=0.7, self_=0.7, mapping="replace", reweight="",
                      cross_words="", prefix=prefix, blend=LOCAL_BLEND)


def local_edit() -> Workflow:
    nodes, groups = local_graph("fatezero/local_red_jeep")
    nodes.append(note(note_text(
        "FateZero local edit with a blend mask: a silver jeep -> a red jeep, the rest of the video kept.",
        LOCAL_FUSION_HELP, BLEND_NOTE)))
    return Workflow("fatezero_local_edit", "local edit with a blend mask: red jeep", nodes, groups)


CONTROLNET_NOTE = f"""\
ControlNet (Load ControlNet Model -> Apply ControlNet -> SamplerCustom)
- Load ControlNet Model: an SD1.5 ControlNet from ComfyUI/models/controlnet ({CONTROLNET} is a \
placeholder name: pick yours).
- Apply ControlNet takes the TARGET prompt's encoding (positive) and the negative prompt's, and its two \
outputs are the sampler's positive and negative: the control steers the edit. The inversion keeps the \
PLAIN encoding of the source prompt: FateZero refuses an attention store inverted with a ControlNet \
(it cannot replay that control when it re-runs the source).
- image: the loaded source frames themselves, one hint per frame, so the control follows the source \
video. This is a stand-in: a depth or canny ControlNet wants depth maps or edge images, so put the \
matching preprocessor (core's Canny node, or a depth estimator from a preprocessor pack) between \
FateZero Load Video and Apply ControlNet.
- strength 0.8, start_percent 0, end_percent 1: the control acts at every step, a little below full \
strength; a lower strength or an earlier end_percent leaves the edit more freedom.
- vae: leave it unconnected for SD1.5 ControlNets; only ControlNets that take latent hints need it."""


def controlnet_local_edit() -> Workflow:
    """The local edit with a ControlNet on the source frames steering the sampler."""
    nodes, groups = local_graph("fatezero/controlnet_red_jeep")
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
    nodes.append(note(note_text(
        "FateZero local edit steered by a ControlNet: a silver jeep -> a red jeep, the ControlNet conditioned "
        "on the source frames keeps the edit on the source's shapes.",
        LOCAL_FUSION_HELP, BLEND_NOTE + "\n\n" + CONTROLNET_NOTE)))
    return Workflow("fatezero_controlnet_local_edit", "local edit with a blend mask and a ControlNet: red jeep",
                    nodes, groups)


LONG_CLIP_NOTE = """\
Long clips (FateZero DDIM Inversion's window)
- frame_count 48 at 512x288 (a 16:9 clip): every UNet call holding all 48 frames would need about \
six times the memory of the authors' 8 frames. window 16 cuts the clip into windows of 16 frames; \
each runs as its own video (inversion and edit): its frames plus the anchor frame the temporal mode \
reads (middle mode: the clip's middle frame), so memory follows the window, not the clip, and time \
grows linearly with the clip.
- The store records the window; the fusion node and the sampler follow it. The sampler's progress \
bar counts windows x steps; Cancel stops between steps and windows.
- Exact where the math allows: with video_groupnorm off, the middle and current+middle modes give \
the frames of the all-frames run. With video_groupnorm on (the authors' choice), each window takes \
its GroupNorm statistics over its own frames and the result differs slightly (docs/long-clips.md).
- Larger windows are closer to the all-frames run and need more memory; 0 = all frames at once.
- To spread a clip over several queue jobs or machines: FateZero Window Frames (window, \
window_index) after Load Video, the inversion's window at 0, and FateZero Window Output before \
VAE Decode; join the jobs' frames in window order (docs/long-clips.md)."""


def long_clip_edit() -> Workflow:
    """The style edit on a 48-frame 16:9 clip in windows of 16 frames."""
    target = "watercolor painting of " + JEEP
    nodes, groups = edit_graph(source=JEEP, target=target, cross=0.8, self_=0.8, mapping="refine",
                               reweight="watercolor:10", cross_words="", prefix="fatezero/long_clip_watercolor",
                               blend=None, frames=48, width=512, height=288, window=16)
    nodes.append(note(note_text(
        "FateZero on a long clip: 48 frames at 512x288, edited in windows of 16 frames around a shared "
        "anchor frame (the watercolor style edit).",
        "- cross_replace_steps 0.8, self_replace_steps 0.8, mapping refine, reweight watercolor:10: the "
        "style edit's settings (see the style workflow).", LONG_CLIP_NOTE)))
    return Workflow("fatezero_long_clip_edit", "long clip in windows: watercolor jeep", nodes, groups)


SDXL_NOTE = """\
SDXL (and SD 2.x)
- The same nodes and settings as on SD1.5; only the size changes: 1024x1024 is SDXL's native size \
(SD 2.x 768 v-prediction: 768x768; SD 2.x base: 512x512). Pick your SDXL checkpoint in Load \
Checkpoint; CLIP Text Encode feeds both of SDXL's text encoders.
- The authors' layer choices carry over by scale: fusion at the layers with at most 64x64 queries at \
1024x1024 (every SDXL transformer; 32x32 at 512 on SD1.5) and the blend mask from SDXL's 32x32 layers \
(1/4 of the latent, as SD1.5's 16x16 at 512).
- Memory: SDXL at 1024x1024 with 8 frames needs a large GPU; use 4 frames, a window (see the long-clip \
workflow) or 768x768 on a smaller one."""


def sdxl_style_edit() -> Workflow:
    """The style edit on an SDXL checkpoint at its native 1024x1024."""
    target = "watercolor painting of " + JEEP
    nodes, groups = edit_graph(source=JEEP, target=target, cross=0.8, self_=0.8, mapping="refine",
                               reweight="watercolor:10", cross_words="", prefix="fatezero/sdxl_style_watercolor_jeep",
                               blend=None, width=1024, height=1024, checkpoint=SDXL_CHECKPOINT)
    nodes.append(note(note_text(
        "FateZero style edit on SDXL: a silver jeep -> watercolor painting, at SDXL's 1024x1024.",
        "- cross_replace_steps 0.8, self_replace_steps 0.8, mapping refine, reweight watercolor:10: the "
        "style edit's settings (see the style workflow).", SDXL_NOTE)))
    return Workflow("fatezero_sdxl_style_edit", "SDXL style edit: watercolor jeep", nodes, groups)


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


def wan_graph(*, unet: str, vae: str, target: str, cross: float, self_: float, mapping: str, reweight: str,
              prefix: str, frames: int, width: int, height: int, steps: int, cfg: float, shift: float,
              fps: float, blend: dict | None = None, high_noise_unet: str | None = None,
              boundary: float = 0.875) -> tuple[list, list]:
    """The FateZero graph on Wan: core loaders, the inversion's noise and sigmas into
    SamplerCustomAdvanced; with ``high_noise_unet`` the two experts of Wan 2.2 A14B, split at
    the inversion's expert_split_step."""
    n = [
        Node(1, "UNETLoader", (X0 + 20, 80), (360, 82), {"unet_name": unet, "weight_dtype": "default"},
             title="Load Diffusion Model (low-noise expert)" if high_noise_unet else None),
        Node(21, "CLIPLoader", (X0 + 20, 200), (360, 106), {"clip_name": UMT5, "type": "wan", "device": "default"}),
        Node(22, "VAELoader", (X0 + 20, 340), (360, 58), {"vae_name": vae}),
        Node(24, "ModelSamplingSD3", (X0 + 20, 430), (360, 58), {"shift": shift}, {"model": (1, 0)},
             title="ModelSamplingSD3 (Wan's shift)"),
        Node(2, "FateZeroLoadVideo", (X0 + 20, 520), (360, 560),
             {"video": VIDEO, "frame_count": frames, "start_frame": 0, "every_nth": 1, "width": width,
              "height": height, "resize": "center crop"}),
        Node(3, "VAEEncode", (X0 + 20, 1120), (210, 46), links={"pixels": (2, 0), "vae": (22, 0)}),
        Node(4, "PrimitiveStringMultiline", (X1 + 20, 80), (400, 110), {"value": JEEP},
             title="Source prompt (describes the video)", color=SOURCE_COLOR),
        Node(5, "PrimitiveStringMultiline", (X1 + 20, 230), (400, 110), {"value": target},
             title="Target prompt (the edit)", color=PROMPT_COLOR),
        Node(6, "CLIPTextEncode", (X1 + 20, 380), (400, 90), {"text": JEEP}, {"text": (4, 0), "clip": (21, 0)},
             title="Encode source prompt", color=SOURCE_COLOR),
        Node(7, "CLIPTextEncode", (X1 + 20, 510), (400, 90), {"text": target}, {"text": (5, 0), "clip": (21, 0)},
             title="Encode target prompt", color=PROMPT_COLOR),
        Node(8, "CLIPTextEncode", (X1 + 20, 640), (400, 90), {"text": WAN_NEGATIVE}, {"clip": (21, 0)},
             title="Encode negative prompt"),
        Node(9, "FateZeroDDIMInversion", (X2 + 20, 80), (400, 400),
             {"steps": steps, "temporal_mode": "per-frame", "temporal_min_channels": 0, "video_groupnorm": False,
              "clean_sigma": "0 (ComfyUI)", "store_mode": "recompute", "cache_replace_steps": 0.8, "window": 0,
              "flow_inversion": "fixed-point", "fixed_point_iterations": 1, "blend_blocks": "auto",
              "expert_boundary": boundary},
             {"model": (24, 0), "source_conditioning": (6, 0), "latent": (3, 0)},
             title="FateZero Inversion (Euler flow, fixed-point)"),
        Node(10, "FateZeroAttentionFusion", (X3 + 20, 80), (380, 340),
             {"source_prompt": JEEP, "target_prompt": target, "cross_replace_steps": cross,
              "self_replace_steps": self_, "mapping": mapping, "reweight": reweight, "cross_replace_words": "",
              "fused_blocks": "auto"},
             {"model": (24, 0), "attention_store": (9, 1), "clip": (21, 0), "source_prompt": (4, 0),
              "target_prompt": (5, 0)}, title="FateZero Attention Fusion (low-noise expert)" if high_noise_unet else None),
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
            Node(27, "FateZeroAttentionFusion", (X3 + 20, 1120), (380, 340),
                 {"source_prompt": JEEP, "target_prompt": target, "cross_replace_steps": cross,
                  "self_replace_steps": self_, "mapping": mapping, "reweight": reweight, "cross_replace_words": "",
                  "fused_blocks": "auto"},
                 {"model": (26, 0), "attention_store": (9, 1), "clip": (21, 0), "source_prompt": (4, 0),
                  "target_prompt": (5, 0)}, title="FateZero Attention Fusion (high-noise expert)"),
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
        n += [
            Node(15, "FateZeroBlendMask", (X2 + 20, 660), (400, 230),
                 {"source_prompt": JEEP, "blend_words": blend["words"], "tau": blend["tau"], "latent_blend": False,
                  "target_blend_words": ""},
                 {"attention_store": (9, 1), "clip": (21, 0), "source_prompt": (4, 0)}),
            Node(16, "MaskToImage", (X2 + 20, 930), (260, 26), links={"mask": (15, 1)}),
            Node(17, "SaveImage", (X2 + 20, 1000), (400, 360), {"filename_prefix": prefix + "_mask"},
                 {"images": (16, 0)}, title="Save blend mask preview"),
        ]
        by_id[10].links["blend_mask"] = (15, 0)
        n += attention_preview((21, 0), blend, X2 + 20, 1400)
        groups.append(Group("3b. Blend mask and attention preview", (X2, 620, 440, 1500), GROUP_COLORS["blend"]))
    return n, groups


WAN_NOTE = """\
How to run: put the Wan files in ComfyUI's model folders (diffusion_models, text_encoders, vae: the \
names below are the usual ones of ComfyUI's Wan templates; pick yours), your clip in ComfyUI/input, \
pick it in FateZero Load Video (bikes.mp4 is a placeholder), then Queue.

Wan on FateZero's nodes
- FateZero Load Video: frame_count 4n+1 (the Wan VAE keeps frame 0 alone and packs each 4 following \
frames into one latent frame). Memory and time grow with frames x pixels.
- FateZero DDIM Inversion runs Euler flow inversion on Wan ('simple' schedule), refined by one \
fixed-point iteration per step at no extra model call (fixed_point_iterations: more calls, a closer \
reconstruction). temporal_mode per-frame, video_groupnorm off, clean_sigma 0: Wan's own 3D attention \
spans the frames, so the SD spatio-temporal settings do not apply. store_mode recompute: Wan keeps the \
latent trajectory only (a cache of q and k would be gigabytes per step).
- The edit: SamplerCustomAdvanced with noise = the inversion's inverted_noise (a flow model starts at \
sigma 1 from the noise alone), sigmas = edit_sigmas, sampler euler, latent_image = inverted_latent, \
CFGGuider with the fusion node's MODEL.
- ModelSamplingSD3 shift: the same MODEL (and shift) feeds the inversion and the fusion node.
- FateZero Attention Fusion: fused_blocks auto = the first half of the transformer blocks (their \
self- and cross-attention come from the source at the first replace steps); 'all' keeps more of the \
source's structure and costs more time."""


def wan21_style_edit() -> Workflow:
    target = "watercolor painting of " + JEEP
    nodes, groups = wan_graph(unet=WAN21_T2V_1_3B, vae=WAN21_VAE, target=target, cross=0.8, self_=0.8,
                              mapping="refine", reweight="watercolor:4", prefix="fatezero/wan21_style_watercolor_jeep",
                              frames=33, width=832, height=480, steps=30, cfg=5.0, shift=8.0, fps=16.0)
    nodes.append(note(
        "FateZero on Wan 2.1 T2V 1.3B: a silver jeep -> watercolor painting (style edit).\n\n" + WAN_NOTE
        + f"\n\nFiles: {WAN21_T2V_1_3B} (diffusion_models), {UMT5} (text_encoders, type wan), {WAN21_VAE} (vae).\n"
        "Settings: 33 frames at 832x480, 30 steps, CFG 5, shift 8 (Wan 2.1's); cross/self_replace_steps 0.8, "
        "mapping refine, reweight watercolor:4."))
    return Workflow("fatezero_wan21_style_edit", "Wan 2.1 style edit: watercolor jeep", nodes, groups)


def wan22_5b_local_edit() -> Workflow:
    nodes, groups = wan_graph(unet=WAN22_TI2V_5B, vae=WAN22_VAE, target=LOCAL_TARGET, cross=0.7, self_=0.7,
                              mapping="replace", reweight="", prefix="fatezero/wan22_5b_local_red_jeep", frames=49,
                              width=1280, height=704, steps=30, cfg=5.0, shift=8.0, fps=24.0, blend=LOCAL_BLEND)
    nodes.append(note(
        "FateZero on Wan 2.2 TI2V 5B: a silver jeep -> a red jeep with a blend mask (local edit).\n\n" + WAN_NOTE
        + f"\n\nFiles: {WAN22_TI2V_5B} (diffusion_models), {UMT5} (text_encoders), {WAN22_VAE} (vae: the 5B "
        "model's own, 48 channels, 16x spatial).\nSettings: 49 frames at 1280x704 (the 5B model's size), 30 steps, "
        "CFG 5, 24 fps; cross/self_replace_steps 0.7, mapping replace ('silver' -> 'red').\n\n" + BLEND_NOTE))
    return Workflow("fatezero_wan22_5b_local_edit", "Wan 2.2 5B local edit with a blend mask: red jeep", nodes, groups)


def wan22_a14b_two_expert_edit() -> Workflow:
    target = "watercolor painting of " + JEEP
    nodes, groups = wan_graph(unet=WAN22_T2V_LOW, vae=WAN21_VAE, target=target, cross=0.8, self_=0.8,
                              mapping="refine", reweight="watercolor:4", prefix="fatezero/wan22_a14b_watercolor_jeep",
                              frames=33, width=832, height=480, steps=20, cfg=3.5, shift=8.0, fps=16.0,
                              high_noise_unet=WAN22_T2V_HIGH, boundary=0.875)
    nodes.append(note(
        "FateZero on Wan 2.2 T2V A14B, two experts: a silver jeep -> watercolor painting.\n\n" + WAN_NOTE
        + "\n\nTwo experts, one inversion, one store\n"
        "- The inversion takes the low-noise expert as model and the high-noise expert as model_high_noise: it "
        "runs the low-noise expert below expert_boundary 0.875 (the released T2V switch point; 0.9 for I2V) and "
        "the high-noise expert above it. The store records both.\n"
        "- SplitSigmas at the inversion's expert_split_step: its high_sigmas go to the high-noise sampler, "
        "which starts from inverted_noise; its low_sigmas to the low-noise sampler (DisableNoise), which "
        "continues from the first sampler's output. Each sampler's CFGGuider takes its own expert's fusion "
        "node; a fusion node on the wrong side stops with a message.\n"
        f"Files: {WAN22_T2V_HIGH} and {WAN22_T2V_LOW} (diffusion_models), {UMT5}, {WAN21_VAE} (the A14B model "
        "uses the Wan 2.1 VAE).\nSettings: 33 frames at 832x480, 20 steps, CFG 3.5, shift 8."))
    return Workflow("fatezero_wan22_a14b_two_expert_edit", "Wan 2.2 A14B two-expert style edit: watercolor jeep",
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
