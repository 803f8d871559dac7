"""The Wan first-frame workflows (issue 35): edit the clip's first frame in an image editor, and a
Wan image-to-video model carries the edit through the clip along the source's motion.

- Wan 2.2 I2V A14B: ComfyUI's A14B I2V template (fp8 experts, lightx2v 4-step LoRAs, shift 5,
  CFG 1, euler, 4 steps split 2 + 2) with the FateZero nodes, as the 4-step T2V workflow is its
  T2V template's; the start images ride on the conditioning (WanImageToVideo).
- Wan 2.2 TI2V 5B: ComfyUI's 5B TI2V template (shift 8, 20 steps, CFG 5, 1280x704); the start
  images ride in the latent (Wan22ImageToVideoLatent): the source's into the inversion's
  start_image_latent, the edited one as the sampler's latent_image."""
from __future__ import annotations

from .clips import LOCAL_TARGET, RABBIT
from .graph import GROUP_COLORS, PROMPT_COLOR, SOURCE_COLOR, X1, Group, Node, Workflow
from .model_files import (WAN21_VAE, WAN22_I2V_HIGH, WAN22_I2V_LIGHTX2V_HIGH, WAN22_I2V_LIGHTX2V_LOW,
                          WAN22_I2V_LOW, WAN22_TI2V_5B, WAN22_VAE)
from .notes import MORE, clip_line, note, wan_run
from .wan import (FEW_STEP_CFG, FEW_STEP_ITERATIONS, FEW_STEP_SHIFT, FEW_STEPS, add_expert_loras, few_step_layout,
                  left_of_the_experts, wan_graph)

EDITED_FIRST_FRAME = "fatezero_edited_first_frame.png"  # a placeholder: the user's edited frame in ComfyUI/input
I2V_BOUNDARY = 0.9  # Wan 2.2 I2V A14B's released expert switch point (T2V: 0.875)
I2V_FRAMES, I2V_SIZE = 81, 640  # ComfyUI's A14B I2V template's video: 81 frames at 640x640
# WanImageToVideo's widgets (the links from Get Image Size override width, height and length)
SIZE_VALUES = {"width": I2V_SIZE, "height": I2V_SIZE, "length": I2V_FRAMES, "batch_size": 1}


def first_frames(nodes: list[Node], groups: list[Group], kind: str, height: int, values: dict,
                 source_links: dict, edit_links: dict) -> None:
    """The first frames below the prompts (nodes 34-38, group 2b): the clip's first frame
    (ImageFromBatch of the loaded frames) into a ``kind`` node (37, the source's start image) and
    the edited first frame (Load Image) into another (38, the edit's), each ``height`` tall. Both
    take width, height and length from the loaded frames (Get Image Size), so their start images
    always fit the inversion's latent."""
    x = X1 + 20
    size = {"width": (36, 0), "height": (36, 1), "length": (36, 2)}
    load_y = 1090 + height + 40
    edit_y = load_y + 420
    nodes += [
        Node(34, "ImageFromBatch", (x, 860), (400, 82), {"batch_index": 0, "length": 1}, {"image": (2, 0)},
             title="ImageFromBatch (the clip's first frame)", color=SOURCE_COLOR),
        Node(36, "GetImageSize", (x, 980), (400, 66), links={"image": (2, 0)},
             title="Get Image Size (the clip's width, height, length)"),
        Node(37, kind, (x, 1090), (400, height), dict(values),
             {**source_links, "vae": (22, 0), **size, "start_image": (34, 0)},
             title=f"{kind} (source: the clip's first frame)", color=SOURCE_COLOR),
        Node(35, "LoadImage", (x, load_y), (400, 380), {"image": EDITED_FIRST_FRAME},
             title="Load Image (your edited first frame)", color=PROMPT_COLOR),
        Node(38, kind, (x, edit_y), (400, height), dict(values),
             {**edit_links, "vae": (22, 0), **size, "start_image": (35, 0)},
             title=f"{kind} (edit: the edited first frame)", color=PROMPT_COLOR),
    ]
    groups.append(Group("2b. First frames: the clip's and your edited one", (X1, 790, 440, edit_y + height + 40 - 790),
                        GROUP_COLORS["prompts"]))


def add_start_images(nodes: list[Node], groups: list[Group]) -> None:
    """Two WanImageToVideo (``first_frames``): the source prompt with the clip's first frame into
    the inversion's source_conditioning; the target prompt with the edited first frame into both
    experts' CFGGuiders."""
    first_frames(nodes, groups, "WanImageToVideo", 210, SIZE_VALUES, {"positive": (6, 0), "negative": (8, 0)},
                 {"positive": (7, 0), "negative": (8, 0)})
    by_id = {n.id: n for n in nodes}
    by_id[9].links["source_conditioning"] = (37, 0)
    for guider in (23, 28):
        by_id[guider].links.update({"positive": (38, 0), "negative": (38, 1)})


def edited_frame_line() -> str:
    """The Note's line on the edited first frame: where it is made and where it goes."""
    return ("- Edited first frame: edit the clip's first frame (Load Video's start_frame) in any image editor "
            "(ComfyUI's image-edit templates: Qwen-Image-Edit 2511, Flux 2 Klein edit) as the target prompt says; "
            f"save it in ComfyUI/input and pick it in Load Image ({EDITED_FIRST_FRAME} is a placeholder).")


def wan22_a14b_i2v_first_frame_edit() -> Workflow:
    """The rabbit's first frame edited to a pink rabbit (by the user, in any image editor), carried
    through 81 frames by the two I2V experts with the source's attention fused."""
    nodes, groups = wan_graph(unet=WAN22_I2V_LOW, vae=WAN21_VAE, clip=RABBIT, start=40, nth=1, target=LOCAL_TARGET,
                              cross=0.8, self_=0.8, mapping="replace", reweight="",
                              prefix="fatezero/wan22_a14b_i2v_first_frame_pink_rabbit", frames=I2V_FRAMES,
                              width=I2V_SIZE, height=I2V_SIZE, steps=FEW_STEPS, cfg=FEW_STEP_CFG,
                              shift=FEW_STEP_SHIFT, fps=16.0, high_noise_unet=WAN22_I2V_HIGH, boundary=I2V_BOUNDARY,
                              iterations=FEW_STEP_ITERATIONS)
    add_expert_loras(nodes, WAN22_I2V_LIGHTX2V_HIGH, WAN22_I2V_LIGHTX2V_LOW)
    few_step_layout(nodes)
    add_start_images(nodes, groups)
    nodes.append(left_of_the_experts(note(
        "FateZero on Wan 2.2 I2V A14B, first-frame edit, as ComfyUI's A14B I2V template (lightx2v 4 steps, CFG 1, "
        "shift 5): you edit the clip's first frame, the model carries the edit through the clip along its own motion; "
        f"{I2V_FRAMES} frames at {I2V_SIZE}x{I2V_SIZE}.", clip_line(nodes),
        *wan_run(f"{WAN22_I2V_HIGH} and {WAN22_I2V_LOW}", WAN21_VAE),
        f"- LoRAs (loras): {WAN22_I2V_LIGHTX2V_HIGH} and the low_noise one, strength 1, each right after its "
        "expert's loader, so the inversion and the edit run the same LoRA'd model.",
        edited_frame_line(),
        "- Both WanImageToVideo take width, height and length from the loaded clip (Get Image Size), as the inverted "
        "latent needs; your frame is scaled and center-cropped to it. Source: source prompt + the clip's first frame; "
        "edit: target prompt + your frame.",
        f"- expert_boundary {I2V_BOUNDARY} (the I2V release's), 4 steps split 2 + 2, fixed_point_iterations 4. The "
        "low-noise sampler has DisableNoise: it continues the high-noise sampler's output, already at the split step; "
        "new noise would leave the inversion's path. Only random tiny models ran this graph: quality unmeasured.",
        MORE)))
    return Workflow("fatezero_wan22_a14b_i2v_first_frame_edit",
                    "Wan 2.2 A14B image-to-video first-frame edit, 4 steps: your edited frame through the clip",
                    nodes, groups)


# ComfyUI's Wan 2.2 TI2V 5B template (video_wan2_2_5B_ti2v.json): shift 8, 20 steps, CFG 5 (its KSampler's
# uni_pc becomes euler on the inversion's edit_sigmas, the scheduler is its 'simple'), 1280x704 at 24 fps. Its
# 121 frames do not fit the rabbit's shot (frames 40-131): 89, the longest 4n+1 run in it.
TI2V_STEPS, TI2V_CFG, TI2V_SHIFT = 20, 5.0, 8.0
TI2V_WIDTH, TI2V_HEIGHT, TI2V_FRAMES = 1280, 704, 89
TI2V_SIZE_VALUES = {"width": TI2V_WIDTH, "height": TI2V_HEIGHT, "length": TI2V_FRAMES, "batch_size": 1}


def add_start_latents(nodes: list[Node], groups: list[Group]) -> None:
    """Two Wan22ImageToVideoLatent (``first_frames``): the clip's first frame into the inversion's
    start_image_latent (its latent stays VAE Encode of the clip), the edited first frame as the
    sampler's latent_image."""
    first_frames(nodes, groups, "Wan22ImageToVideoLatent", 150, TI2V_SIZE_VALUES, {}, {})
    by_id = {n.id: n for n in nodes}
    by_id[9].links["start_image_latent"] = (37, 0)
    by_id[11].links["latent_image"] = (38, 0)
    by_id[11].title = "SamplerCustomAdvanced (edit from the inverted noise, your first frame kept)"


def wan22_5b_ti2v_first_frame_edit() -> Workflow:
    """The rabbit's first frame edited to a pink rabbit (by the user), carried through the clip by
    Wan 2.2 TI2V 5B with the start image in the latent and the source's attention fused."""
    nodes, groups = wan_graph(unet=WAN22_TI2V_5B, vae=WAN22_VAE, clip=RABBIT, start=40, nth=1, target=LOCAL_TARGET,
                              cross=0.8, self_=0.8, mapping="replace", reweight="",
                              prefix="fatezero/wan22_5b_ti2v_first_frame_pink_rabbit", frames=TI2V_FRAMES,
                              width=TI2V_WIDTH, height=TI2V_HEIGHT, steps=TI2V_STEPS, cfg=TI2V_CFG, shift=TI2V_SHIFT,
                              fps=24.0)
    add_start_latents(nodes, groups)
    nodes.append(note(
        "FateZero on Wan 2.2 TI2V 5B, first-frame edit, as ComfyUI's 5B TI2V template (20 steps, CFG 5, shift 8): you "
        "edit the clip's first frame, the model carries the edit through the clip along its own motion; "
        f"{TI2V_FRAMES} frames at {TI2V_WIDTH}x{TI2V_HEIGHT} (the template's 121 would run past the rabbit's shot).",
        clip_line(nodes),
        *wan_run(WAN22_TI2V_5B, WAN22_VAE, "inverted_noise and edit_sigmas (its latent_image: see below)"),
        edited_frame_line(),
        "- The 5B model takes the start image in the latent: Wan22ImageToVideoLatent of the clip's first frame -> the "
        "inversion's start_image_latent (its latent stays VAE Encode of the clip); Wan22ImageToVideoLatent of your "
        "frame -> the sampler's latent_image (not inverted_latent). Both take width, height and length from the "
        "loaded clip (Get Image Size); your frame is scaled and center-cropped to it. Only random tiny models ran "
        "this graph: quality unmeasured.",
        MORE))
    return Workflow("fatezero_wan22_5b_ti2v_first_frame_edit",
                    "Wan 2.2 TI2V 5B first-frame edit: your edited frame through the clip", nodes, groups)


WAN_I2V_WORKFLOWS = (wan22_a14b_i2v_first_frame_edit, wan22_5b_ti2v_first_frame_edit)
