"""The Stable Diffusion workflows (SD1.5 and SDXL checkpoints): one editing graph and its edits."""
from __future__ import annotations

from .clips import ATTRIBUTE_TARGET, BICYCLE, LOCAL_BLEND, LOCAL_TARGET, RABBIT, STYLE_TARGET, Clip
from .graph import GROUP_COLORS, X0, X1, X2, X3, Group, Node, Workflow
from .model_files import CHECKPOINT, CONTROLNET, SDXL_CHECKPOINT
from .notes import BLEND_LINE, LOCAL_LINE, MORE, SD_RUN, STYLE_LINE, clip_line, note, sd_run
from .parts import add_blend_branch, decode_and_save, fusion_node, load_video, prompt_nodes, stage_groups


def edit_graph(*, clip: Clip, target: str, cross: float, self_: float, mapping: str, reweight: str,
               cross_words: str, prefix: str, blend: dict | None, frames: int = 8, start: int = 40, nth: int = 4,
               width: int = 512, height: int = 512, window: int = 0,
               checkpoint: str = CHECKPOINT) -> tuple[list[Node], list[Group]]:
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
        *decode_and_save((1, 2), 30.0, prefix),
    ]
    groups = stage_groups("1. Model and video", 910, 394, 870)
    if blend is not None:
        add_blend_branch(n, groups, source=source, blend=blend, clip=(1, 1), prefix=prefix, y=460, group_y=390)
    return n, groups


def sd_style(name: str, title: str, prefix: str, headline: str, *extra: str, clip: Clip = RABBIT,
             **size) -> Workflow:
    """The style edit (the authors' watercolor settings) on ``clip`` at ``size``, with its Note."""
    nodes, groups = edit_graph(clip=clip, target=STYLE_TARGET + clip.source, cross=0.8, self_=0.8, mapping="refine",
                               reweight="watercolor:10", cross_words="", prefix=prefix, blend=None, **size)
    nodes.append(note(headline, clip_line(nodes), *sd_run(size.get("checkpoint", CHECKPOINT)), STYLE_LINE, *extra, MORE))
    return Workflow(name, title, nodes, groups)


def style_edit() -> Workflow:
    return sd_style("fatezero_style_edit", "style edit: watercolor rabbit", "fatezero/style_watercolor_rabbit",
                    "FateZero style edit: a rabbit cartoon -> watercolor painting (the authors' settings).")


def attribute_edit() -> Workflow:
    nodes, groups = edit_graph(clip=RABBIT, target=ATTRIBUTE_TARGET, cross=0.7, self_=0.7, mapping="replace",
                               reweight="", cross_words="", prefix="fatezero/attribute_rabbit_to_bear", blend=None)
    nodes.append(note(
        "FateZero attribute edit: a grey rabbit -> a brown bear, the same pose and motion.",
        clip_line(nodes), *SD_RUN,
        "- Word swap: mapping replace, both prompts have the same number of words; cross/self_replace_steps 0.7 "
        "(the authors' attribute setting): lower lets the new words change more, higher keeps more.", MORE))
    return Workflow("fatezero_attribute_edit", "attribute edit: rabbit to bear", nodes, groups)


def local_graph(prefix: str) -> tuple[list[Node], list[Group]]:
    """The local edit (the grey rabbit turns pink, the hill stays): a blend mask on its source words."""
    return edit_graph(clip=RABBIT, target=LOCAL_TARGET, cross=0.7, self_=0.7, mapping="replace", reweight="",
                      cross_words="", prefix=prefix, blend=LOCAL_BLEND)


def local_edit() -> Workflow:
    nodes, groups = local_graph("fatezero/local_pink_rabbit")
    nodes.append(note("FateZero local edit with a blend mask: the grey rabbit turns pink, the hill and the sky stay.",
                      clip_line(nodes), *SD_RUN, LOCAL_LINE, BLEND_LINE, MORE))
    return Workflow("fatezero_local_edit", "local edit with a blend mask: pink rabbit", nodes, groups)


def controlnet_local_edit() -> Workflow:
    """The local edit steered by SD1.5's canny ControlNet: core Canny turns the source frames into
    the edge maps that ControlNet was trained on, and the ControlNet steers the sampler only."""
    nodes, groups = local_graph("fatezero/controlnet_pink_rabbit")
    by_id = {n.id: n for n in nodes}
    nodes += [
        Node(42, "Canny", (X1 + 20, 880), (400, 82), {"low_threshold": 0.4, "high_threshold": 0.8},
             {"image": (2, 0)}, title="Canny (the source frames' edges: the hint)"),
        Node(18, "ControlNetLoader", (X1 + 20, 1000), (400, 58), {"control_net_name": CONTROLNET}),
        Node(19, "ControlNetApplyAdvanced", (X1 + 20, 1100), (400, 186),
             {"strength": 0.8, "start_percent": 0.0, "end_percent": 1.0},
             {"positive": (7, 0), "negative": (8, 0), "control_net": (18, 0), "image": (42, 0)},
             title="Apply ControlNet (canny edges of the source frames)"),
    ]
    by_id[11].links.update({"positive": (19, 0), "negative": (19, 1)})
    groups.append(Group("2b. ControlNet on the source frames' edges", (X1, 800, 440, 520), GROUP_COLORS["control"]))
    nodes.append(note(
        "FateZero local edit steered by a ControlNet on the source frames' edges: the grey rabbit turns pink.",
        clip_line(nodes), *SD_RUN, LOCAL_LINE, BLEND_LINE,
        f"- ControlNet: core Canny (0.4 / 0.8) makes each source frame's edge map, the hint {CONTROLNET} was "
        "trained on; it steers the sampler only, strength 0.8. Another ControlNet: its own preprocessor in Canny's "
        "place.", MORE))
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


SD_WORKFLOWS = (style_edit, attribute_edit, local_edit, controlnet_local_edit, long_clip_edit, sdxl_style_edit)
