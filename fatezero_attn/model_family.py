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
    name: str         # "SD1", "SD2", "SD2-v", "SDXL", "WAN21"
    native_size: int  # pixels
    kind: str = "sd"  # "sd": a UNet on a discrete schedule (DDIM); "wan": a video DiT on flow matching
    vae_scale: int = 8  # pixels per latent pixel of the family's VAE (Wan 2.2 5B's: 16)

    @property
    def fuse_max_query(self) -> int:
        """Query length up to which layers are fused: 32x32 scaled to the native latent (SD).
        0 for a DiT, whose fused blocks are chosen by index (``wan_dit.py``)."""
        if self.kind != "sd":
            return 0
        side = 32 * (self.native_size // 8) // SD_NATIVE_LATENT
        return side * side

    @property
    def seam(self):
        """The model seam (``sd_unet.py`` / ``wan_dit.py``): how the pack reaches this family's attention."""
        if self.kind == "wan":
            from .wan_dit import WAN_DIT
            return WAN_DIT
        from .sd_unet import SD_UNET
        return SD_UNET


# WAN21: Wan 2.1 text-to-video (1.3B, 14B) and the Wan 2.2 A14B experts, which share its architecture;
# WAN22-5B: Wan 2.2 TI2V 5B (48-channel latent of its own VAE, 16x spatial compression)
FAMILIES = {"SD1": Family("SD1", 512), "SD2": Family("SD2", 512), "SD2-v": Family("SD2-v", 768),
            "SDXL": Family("SDXL", 1024), "WAN21": Family("WAN21", 832, "wan"),
            "WAN22-5B": Family("WAN22-5B", 1280, "wan", 16)}
assert FAMILIES["SD1"].fuse_max_query == FUSE_MAX_QUERY


def family_of(model_patcher) -> Family | None:
    """The family of a ComfyUI MODEL: an SD text-to-image UNet (4 input channels, or 9 for
    inpainting; no temporal layers) told apart by its context width, on a discrete
    schedule with eps or v prediction (as the MODEL samples now: a ModelSamplingDiscrete node's
    v-prediction counts). None for any other model (SVD, upscalers, unCLIP, EDM, flow, ...)."""
    import comfy.model_sampling as sampling
    base = model_patcher.model
    wan = wan_family(model_patcher)
    if wan is not None:
        return wan
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


def wan_family(model_patcher) -> Family | None:
    """Wan 2.1 text-to-video (and the 2.2 A14B experts, and the 2.2 5B model by its 48 latent
    channels): ComfyUI's ``WanModel`` with text cross-attention only, on the flow-matching
    (``CONST``) schedule. Image-to-video (2.1), VACE, camera and other Wan variants are not taken
    (their extra attention inputs are not replayed)."""
    import comfy.model_sampling as sampling
    from comfy.ldm.wan.model import WanModel
    base = model_patcher.model
    dm = getattr(base, "diffusion_model", None)
    if type(dm) is not WanModel or getattr(dm, "model_type", None) != "t2v" or dm.out_dim not in (16, 48):
        return None
    ms = model_patcher.get_model_object("model_sampling")
    if not isinstance(ms, sampling.CONST):
        return None
    return FAMILIES["WAN21" if dm.out_dim == 16 else "WAN22-5B"]
