"""The base model family of a MODEL, and the authors' layer choices carried over to it.

The authors ran SD1.x at 512x512 (a 64x64 latent). Their two layer choices are meant by
scale, and the pack keeps that meaning on every family (``defaults.py``):
- fused layers: at most 32x32 queries at 512x512, i.e. the levels at 1/2 of the native latent
  and below. At a family's native size that is ``(native_latent / 2)^2`` queries: 32x32 for
  SD1.x and SD 2.x at 512, 48x48 for SD 2.x 768 v-prediction, 64x64 for SDXL at 1024 (every
  SDXL transformer: its levels are 1/2 and 1/4 of the latent).
- blend layers: 1/4 of the latent (SD1.5's 16x16 maps at 512x512): 24x24 for SD 2.x at 768,
  32x32 for SDXL at 1024 (its deepest level), found by role in ``sd_unet.blend_factor``.
"""
from __future__ import annotations

from dataclasses import dataclass

from .defaults import FUSE_MAX_QUERY

SD_NATIVE_LATENT = 64  # SD1.x at 512x512: the scale the authors' 32x32 refers to


@dataclass(frozen=True)
class Family:
    name: str         # "SD1", "SD2", "SD2-v", "SDXL"
    native_size: int  # pixels

    @property
    def fuse_max_query(self) -> int:
        """Query length up to which layers are fused: 32x32 scaled to the native latent."""
        side = 32 * (self.native_size // 8) // SD_NATIVE_LATENT
        return side * side


FAMILIES = {"SD1": Family("SD1", 512), "SD2": Family("SD2", 512), "SD2-v": Family("SD2-v", 768),
            "SDXL": Family("SDXL", 1024)}
assert FAMILIES["SD1"].fuse_max_query == FUSE_MAX_QUERY


def family_of(model_patcher) -> Family | None:
    """The family of a ComfyUI MODEL: an SD text-to-image UNet (4 input channels, or 9 for
    inpainting; no temporal layers) told apart by its context width, on a discrete
    schedule with eps or v prediction (as the MODEL samples now: a ModelSamplingDiscrete node's
    v-prediction counts). None for any other model (SVD, upscalers, unCLIP, EDM, flow, ...)."""
    import comfy.model_sampling as sampling
    base = model_patcher.model
    config = getattr(getattr(base, "model_config", None), "unet_config", None) or {}
    if not hasattr(base, "diffusion_model") or not hasattr(base.diffusion_model, "input_blocks"):
        return None
    if config.get("in_channels", 4) not in (4, 9) or config.get("use_temporal_attention"):
        return None
    ms = model_patcher.get_model_object("model_sampling")
    if not isinstance(ms, sampling.ModelSamplingDiscrete) or not isinstance(ms, sampling.EPS) \
            or isinstance(ms, getattr(sampling, "EDM", ())):
        return None
    v_prediction = isinstance(ms, sampling.V_PREDICTION)
    context, adm = config.get("context_dim"), config.get("adm_in_channels")
    if context == 768 and adm is None:
        return FAMILIES["SD1"]
    if context == 1024 and adm is None:
        return FAMILIES["SD2-v" if v_prediction else "SD2"]
    if context == 2048 and adm == 2816:
        return FAMILIES["SDXL"]
    return None
