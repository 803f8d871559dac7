"""The start image of a Wan image-to-video edit (first-frame propagation).

ComfyUI's ``WanImageToVideo`` puts the start image on the conditioning it returns: its latent
(``concat_latent_image`` ``[1, 16, T, h, w]``: the image as frame 0, grey after), a mask of the
frames it fixes (``concat_mask``) and, for Wan 2.1, the CLIP vision features
(``clip_vision_output``). The model turns them into ``c_concat`` and ``clip_fea`` per call; the
inversion records those with the rest of its conditioning and the source row replays them, so
the source row sees the source clip's first frame while the edit rows see the edited one.

``concat_cond`` resizes a start-image latent of another size to the latent without a word, and
a start image of other frames fails deep in the model: both are checked here, by name.
"""
from __future__ import annotations

from ..errors import FateZeroError

CORE_NODE = "WanImageToVideo"


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


def check_edit(node: str, info, guider) -> None:
    """The sampler's positive conditioning in an image-to-video edit: a start image (the edited
    first frame) of the store's frames and size. ``guider``: the sampler's guider, whose
    ``conds`` hold the conditioning as connected (ComfyUI's ``CFGGuider`` during sampling)."""
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
