"""The model seam: what the dispatcher needs to know about a diffusion model's attention.

Contract (what a model family implements; the dispatcher, the source call and the capture
use nothing else that is specific to a model):

- ``sites(diffusion_model) -> list[key]``: every attention site, as hashable keys;
  ``site_key(extra)``: the key of the site an attention call comes from.
- ``take_over(model_patcher, patch)``: route every site's self-attention ("attn1") and
  cross-attention ("attn2") to ``patch._dispatch(attn, q, k, v, extra)``, composed with what
  other nodes put there; q, k, v arrive projected, ``[batch, tokens, heads * dim_head]``, and
  the dispatcher returns the attention output before the output projection. ``extra`` holds
  ``n_heads``, the call's ``fatezero`` info and, when plain attention is not ComfyUI's
  ``optimized_attention``, the ``attention_fn`` to use. ``prepare_call(patch, opts)``: per
  model call, other nodes' patches to compose at each site (``composition.py``);
  ``call_layout(x, patch)``: what the attention calls need to know about the latent.
- ``blend_layers(diffusion_model, choice)`` and ``is_blend_layer(extra, layers)``: the layers
  whose cross-attention makes the blend mask; ``map_grid(extra)``: the ``(h, w)`` of one
  frame's map at a call. ``fused_sites(diffusion_model, choice)``: the fused sites, or None
  when layers are fused by query count (``FusionPlan.max_query``).
- ``group_norm_names(diffusion_model)``: the norms that take statistics over a frame, for
  video-wide GroupNorm.

``SD_UNET`` is the implementation for SD 1.x/2.x/SDXL UNets (ComfyUI's ``openaimodel``),
reached through ComfyUI's attention replaces; ``wan_dit.WAN_DIT`` the one for Wan's DiT,
reached through its per-block replace and the attention override.
"""
from __future__ import annotations

from .layout import attention_layout

# A nominal latent for walking the UNet: keys and level ratios do not depend on its size.
_WALK_HW = (64, 64)


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


class SDUNet:
    """The seam for ComfyUI's SD UNets: sites are transformer blocks ``(block, number, index)``."""
    kind = "sd"
    sites = staticmethod(attention_blocks)
    group_norm_names = staticmethod(group_norm_names)

    @staticmethod
    def blend_layers(diffusion_model, choice: str = "") -> int | None:
        """The blend layers' size ratio to the latent (by role: ``blend_factor``)."""
        return blend_factor(diffusion_model)

    @staticmethod
    def fused_sites(diffusion_model, choice: str = ""):
        return None  # by query count

    @staticmethod
    def map_grid(extra: dict) -> tuple[int, int]:
        return tuple(extra["activations_shape"][2:])

    @staticmethod
    def take_over(model_patcher, patch) -> None:
        patch._take_over_sites(model_patcher)

    @staticmethod
    def prepare_call(patch, opts: dict) -> dict:
        return patch._other_patches_for_call(opts)

    @staticmethod
    def call_layout(x, patch) -> dict:
        return {}

    @staticmethod
    def site_key(extra: dict):
        return (*extra["block"], extra.get("block_index", 0)) if extra.get("block") else None

    @staticmethod
    def is_blend_layer(extra: dict, factor: int | None) -> bool:
        """At the deepest down level's resolution, in a down or up block (not the middle block)."""
        latent_h = extra["original_shape"][2]
        h = extra["activations_shape"][2]
        return extra.get("block", ("",))[0] != "middle" and round(latent_h / h) == factor

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


SD_UNET = SDUNet()
