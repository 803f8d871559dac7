"""The start image of a Wan image-to-video edit (first-frame propagation).

ComfyUI's ``WanImageToVideo`` puts the start image on the conditioning it returns: its latent
(``concat_latent_image`` ``[1, 16, T, h, w]``: the image as frame 0, grey after), a mask of the
frames it fixes (``concat_mask``) and, for Wan 2.1, the CLIP vision features
(``clip_vision_output``). The model turns them into ``c_concat`` and ``clip_fea`` per call; the
inversion records those with the rest of its conditioning and the source row replays them, so
the source row sees the source clip's first frame while the edit rows see the edited one.

``concat_cond`` resizes a start-image latent of another size to the latent without a word, and
a start image of other frames fails deep in the model: both are checked here, by name.

Wan 2.2 TI2V 5B takes its start image in the latent instead (``Wan22ImageToVideoLatent``): the
image's latent as the first latent frame and a noise mask that is 0 there. The sampler keeps
those frames clean at every call and the model gives their tokens timestep 0. The inversion does
the same with the source's start image (``latent_start_image``); the store records the mask with
the conditioning, and the edit's sampler latent must fix the same frames (``check_edit``).
"""
from __future__ import annotations

import torch

from ..errors import FateZeroError

CORE_NODE = "WanImageToVideo"
LATENT_NODE = "Wan22ImageToVideoLatent"


def _grid(shape) -> str:
    return f"{shape[-3]} latent frames of {shape[-1]}x{shape[-2]}"


def check_source(node: str, family, conditioning: list, latent_shape: tuple) -> None:
    """The inversion's ``source_conditioning`` on an image-to-video model: one start image, of
    the latent's frames and size."""
    if not getattr(family, "image_to_video", False):
        return
    image = conditioning[0][1].get("concat_latent_image")
    if image is None:
        raise FateZeroError(
            f"{node}: 'model' is a Wan image-to-video model ({family.name}) and 'source_conditioning' carries no start "
            f"image. Connect the positive output of {CORE_NODE} with the source prompt as positive and the clip's "
            "first frame as start_image (width, height and length those of the clip).")
    if tuple(image.shape[-3:]) != tuple(latent_shape[-3:]):
        raise FateZeroError(
            f"{node}: the start image on 'source_conditioning' is {_grid(image.shape)} and 'latent' is "
            f"{_grid(latent_shape)}. Set {CORE_NODE}'s width, height and length to the clip's (FateZero Load Video's "
            "width, height and frame_count).")


def fixed_frames(mask: torch.Tensor) -> int | None:
    """The leading latent frames a noise mask ``[B, C, T, h, w]`` keeps (0 everywhere in them, 1
    everywhere after: a start image's mask); None for any other mask."""
    per_frame = mask.movedim(2, 0).reshape(mask.shape[2], -1)
    kept = (per_frame == 0).all(1)
    free = (per_frame == 1).all(1)
    n = int(kept.long().cumprod(0).sum())
    return n if bool(free[n:].all()) else None


def latent_start_image(node: str, family, start: dict | None, samples: torch.Tensor):
    """The inversion's ``start_image_latent`` (Wan 2.2 TI2V 5B): ``(latent, noise_mask, frames)``,
    the clip's latent with the start image's frames in place of its own, the noise mask that keeps
    them, and how many; ``(samples, None, 0)`` without one."""
    if start is None:
        return samples, None, 0
    if not getattr(family, "latent_start_image", False):
        why = (f"an image-to-video model takes its start image on the conditioning: connect {CORE_NODE}'s positive "
               "as source_conditioning" if getattr(family, "image_to_video", False) else
               f"only Wan 2.2 TI2V 5B takes a start image in its latent")
        raise FateZeroError(f"{node}: 'start_image_latent' is connected and 'model' is {family.name}; {why}. Leave "
                            "start_image_latent unconnected.")
    mask = start.get("noise_mask")
    image = start["samples"]
    if mask is None or tuple(image.shape) != tuple(samples.shape):
        got = "no noise mask" if mask is None else f"shape {tuple(image.shape)}"
        raise FateZeroError(f"{node}: 'start_image_latent' has {got}; 'latent' is {tuple(samples.shape)}. Connect "
                            f"{LATENT_NODE} given the clip's first frame as start_image, with the clip's width, height "
                            "and length (FateZero Load Video's) and batch_size 1.")
    import comfy.utils
    mask = comfy.utils.reshape_mask(mask, samples.shape).to(samples)
    frames = fixed_frames(mask)
    if not frames or frames == samples.shape[2]:
        raise FateZeroError(f"{node}: the noise mask on 'start_image_latent' does not keep the first latent frames "
                            f"and free the others, as {LATENT_NODE}'s does; connect {LATENT_NODE}'s output directly.")
    return samples * mask + image.to(samples) * (1 - mask), mask, frames


def check_edit(node: str, info, guider, denoise_mask: torch.Tensor | None = None) -> None:
    """The sampler's start image in an image-to-video edit: on the positive conditioning, the
    edited first frame of the store's frames and size; in the latent (TI2V 5B), a noise mask
    that keeps the frames the inversion kept. ``guider``: the sampler's guider, whose ``conds``
    hold the conditioning as connected (ComfyUI's ``CFGGuider`` during sampling);
    ``denoise_mask``: the sampler's, from its latent's noise mask."""
    if info.family.inverter == "flow":
        check_latent_start(node, info, denoise_mask)
    if not getattr(info.family, "image_to_video", False):
        return
    conds = getattr(guider, "conds", None)
    if not isinstance(conds, dict):
        return  # a guider that keeps its conditioning elsewhere: the model checks its input shapes
    grid = (info.latent_frames, *info.latent_hw)
    for name in ("positive", "negative"):
        for cond in conds.get(name) or []:
            image = cond.get("concat_latent_image")
            if image is None and name == "positive":
                raise FateZeroError(
                    f"{node}: the attention store was inverted by a Wan image-to-video model with a start image, and "
                    f"the sampler's positive carries none. Connect the positive of a {CORE_NODE} given the target "
                    "prompt and the edited first frame as start_image.")
            if image is not None and tuple(image.shape[-3:]) != grid:
                raise FateZeroError(
                    f"{node}: the start image on the sampler's {name} is {_grid(image.shape)}, the attention store "
                    f"{_grid((0, *grid))}. Set the edit's {CORE_NODE} width, height and length to those of the "
                    "inversion's.")


def check_latent_start(node: str, info, denoise_mask: torch.Tensor | None) -> None:
    kept = 0 if denoise_mask is None else fixed_frames(denoise_mask)
    if kept == info.start_frames:
        return
    if info.start_frames:
        what = "carries another noise mask" if kept is None else f"keeps {kept or 'none'}"
        raise FateZeroError(
            f"{node}: the attention store was inverted with a start image keeping {info.start_frames} latent frame(s), "
            f"and the sampler's latent_image {what}. Connect {LATENT_NODE} "
            "given the edited first frame (the clip's width, height and length) as the sampler's latent_image.")
    raise FateZeroError(
        f"{node}: the sampler's latent_image carries a noise mask ({LATENT_NODE}'s start image, or Set Latent Noise "
        "Mask) and the attention store was inverted without one, so the source row would not match the edit. For a "
        f"first-frame edit on Wan 2.2 TI2V 5B, connect {LATENT_NODE} given the clip's first frame to the inversion's "
        "start_image_latent; otherwise connect the inversion's inverted_latent as latent_image.")
