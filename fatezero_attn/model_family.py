"""The base model family of a MODEL, and the authors' layer choices carried over to it.

The authors ran SD1.x at 512x512 (a 64x64 latent). Their two layer choices are meant by
scale, and the pack keeps that meaning on every family (``defaults.py``):
- fused layers: at most 32x32 queries at 512x512, i.e. the levels at 1/2 of the native latent
  and below. At a family's native size that is ``(native_latent / 2)^2`` queries: 32x32 for
  SD1.x and SD 2.x at 512, 48x48 for SD 2.x 768 v-prediction, 64x64 for SDXL at 1024 (every
  SDXL transformer: its levels are 1/2 and 1/4 of the latent).
- blend layers: 1/4 of the latent (SD1.5's 16x16 maps at 512x512): 24x24 for SD 2.x at 768,
  32x32 for SDXL at 1024 (its deepest level), found by role in ``hooks.blend_factor``.
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
    """The family of a ComfyUI MODEL from its UNet config (context width) and prediction
    type; None for a model FateZero does not support (not an SD UNet)."""
    base = model_patcher.model
    config = getattr(getattr(base, "model_config", None), "unet_config", None) or {}
    if not hasattr(base, "diffusion_model") or not hasattr(base.diffusion_model, "input_blocks"):
        return None
    context = config.get("context_dim")
    if context == 768:
        return FAMILIES["SD1"]
    if context == 1024:
        from comfy.model_base import ModelType
        return FAMILIES["SD2-v" if getattr(base, "model_type", None) == ModelType.V_PREDICTION else "SD2"]
    if context == 2048 and config.get("adm_in_channels") == 2816:
        return FAMILIES["SDXL"]
    return None
