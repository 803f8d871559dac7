"""SD 1.x / 2.x / SDXL UNets (ComfyUI's ``openaimodel``), reached through ComfyUI's attention
replaces; sites are transformer blocks ``(block, number, index)``.

The authors ran SD1.x at 512x512 (a 64x64 latent). Their two layer choices are meant by
scale, and the pack keeps that meaning on every SD family (``defaults.py``):
- fused layers: at most 32x32 queries at 512x512, i.e. the levels at 1/2 of the native latent
  and below. At a family's native size that is ``(native_latent / 2)^2`` queries: 32x32 for
  SD1.x and SD 2.x at 512, 48x48 for SD 2.x 768 v-prediction, 64x64 for SDXL at 1024 (every
  SDXL transformer: its levels are 1/2 and 1/4 of the latent).
- blend layers: 1/4 of the latent (SD1.5's 16x16 maps at 512x512): 24x24 for SD 2.x at 768,
  32x32 for SDXL at 1024 (its deepest level), found by role in ``blend_factor``.
"""
from __future__ import annotations

from ..defaults import FUSE_MAX_QUERY
from .base import ModelFamily
from .sd_layout import attention_layout

# A nominal latent for walking the UNet: keys and level ratios do not depend on its size.
_WALK_HW = (64, 64)
SD_NATIVE_LATENT = 64  # SD1.x at 512x512: the scale the authors' 32x32 refers to


def attention_blocks(diffusion_model) -> list[tuple[str, int, int]]:
    """Every ``(block, number, transformer_index)`` with a transformer in the UNet."""
    return [(l.block, l.number, l.depth) for l in attention_layout(diffusion_model, _WALK_HW)]


def blend_factor(diffusion_model) -> int | None:
    """Latent size / blend-layer size: the deepest down level with transformers (defaults.py)."""
    down = [l for l in attention_layout(diffusion_model, _WALK_HW) if l.block == "input"]
    return _WALK_HW[0] // down[-1].h if down else None


def group_norm_names(diffusion_model) -> list[str]:
    """The two GroupNorms of every ResBlock and the output norm (not the transformers')."""
    from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock
    names = [f"diffusion_model.{n}.{part}" for n, m in diffusion_model.named_modules()
             if isinstance(m, ResBlock) for part in ("in_layers.0", "out_layers.0")]
    return names + ["diffusion_model.out.0"]


class UNetSeam:
    """The seam bound to one UNet (``base.py`` states the contract)."""
    source_by_block = False  # skip connections: the source row is one whole pass

    def __init__(self, sites: list, blend_factor: int | None, norms: list[str]):
        self.sites, self.blend_factor, self._norms = sites, blend_factor, norms

    @classmethod
    def of(cls, diffusion_model) -> "UNetSeam":
        return cls(attention_blocks(diffusion_model), blend_factor(diffusion_model), group_norm_names(diffusion_model))

    def group_norm_names(self) -> list[str]:
        return self._norms

    @staticmethod
    def map_grid(extra: dict) -> tuple[int, int]:
        return tuple(extra["activations_shape"][2:])

    def take_over(self, model_patcher, dispatcher) -> None:
        dispatcher.composition.take_over_sites(model_patcher, dispatcher)

    @staticmethod
    def prepare_call(opts: dict, dispatcher) -> dict:
        return dispatcher.composition.for_call(opts)

    @staticmethod
    def token_grid(x) -> None:
        return None

    @staticmethod
    def site_key(extra: dict):
        return (*extra["block"], extra.get("block_index", 0)) if extra.get("block") else None

    def is_blend_layer(self, extra: dict) -> bool:
        """At the deepest down level's resolution, in a down or up block (not the middle block)."""
        latent_h = extra["original_shape"][2]
        h = extra["activations_shape"][2]
        return extra.get("block", ("",))[0] != "middle" and round(latent_h / h) == self.blend_factor

    @staticmethod
    def install_replace(model_patcher, attn: str, key, fn) -> None:
        install = model_patcher.set_model_attn1_replace if attn == "attn1" else model_patcher.set_model_attn2_replace
        install(fn, *key)

    @staticmethod
    def block_key(key):
        """The coarser key ComfyUI also looks up for a transformer: its block (PAG's ``("middle", 0)``)."""
        return key[:2]

    @classmethod
    def replace_on_site(cls, table: dict, key):
        """``(fn, by_block_key)``: a replace on the transformer, else on its block."""
        if table.get(key) is not None:
            return table[key], False
        return table.get(cls.block_key(key)), cls.block_key(key) in table


class SDFamily(ModelFamily):
    """An SD text-to-image UNet on a discrete schedule (DDIM inversion), fused by query count."""

    @property
    def fuse_max_query(self) -> int:
        """32x32 scaled to the native latent."""
        side = 32 * (self.native_size // 8) // SD_NATIVE_LATENT
        return side * side

    def seam(self, diffusion_model, blend_choice: str = "") -> UNetSeam:
        return UNetSeam.of(diffusion_model)


SD1, SD2, SD2_V, SDXL = SDFamily("SD1", 512), SDFamily("SD2", 512), SDFamily("SD2-v", 768), SDFamily("SDXL", 1024)
FAMILIES = (SD1, SD2, SD2_V, SDXL)
assert SD1.fuse_max_query == FUSE_MAX_QUERY


def detect(model_patcher) -> SDFamily | None:
    """An SD text-to-image UNet (4 input channels, or 9 for inpainting; no temporal layers) told
    apart by its context width, on a discrete schedule with eps or v prediction (as the MODEL
    samples now: a ModelSamplingDiscrete node's v-prediction counts). None for any other model
    (SVD, upscalers, unCLIP, EDM, flow, ...)."""
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
        return SD1
    if context == 1024 and adm is None:
        return SD2_V if v_prediction else SD2
    if context == 2048 and adm == 2816:
        return SDXL
    return None
