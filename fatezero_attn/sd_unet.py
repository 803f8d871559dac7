"""The model seam: what the dispatcher needs to know about a diffusion model's attention.

Contract (what a model family implements; the dispatcher, the source call and the capture
use nothing else that is specific to a model):

- ``sites(diffusion_model) -> list[key]``: every attention site that gets the pack's
  replace, as hashable keys; ``site_key(extra_options)``: the key of the site an attention
  call comes from.
- ``install_replace(model_patcher, attn, key, fn)``: put ``fn(q, k, v, extra_options)`` on a
  site for ``attn`` ("attn1" self-attention, "attn2" cross-attention); q, k, v arrive
  projected, ``[batch, tokens, heads * dim_head]``, and ``fn`` returns the attention output
  before the output projection. ``replace_on_site(table, key)``: what another node set on
  that site in a ``patches_replace[attn]`` table, and whether it was found under the coarser
  ``block_key(key)`` (which a later node may change).
- ``blend_factor(diffusion_model)`` and ``is_blend_layer(extra_options, factor)``: the
  layers whose cross-attention makes the blend mask (by role, not by size).
- ``group_norm_names(diffusion_model)``: the norms that take statistics over a frame, for
  video-wide GroupNorm.
- Fused layers are chosen by query count (``FusionPlan.max_query``); the text tokens are
  ``alignment.MAX_TOKENS`` positions of one CLIP window.

A transformer over video tokens would implement the same calls through its per-block
replace and an attention override. ``SD_UNET`` is the implementation for SD 1.x/2.x/SDXL
UNets (ComfyUI's ``openaimodel``), reached through ComfyUI's attention replaces.
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
    sites = staticmethod(attention_blocks)
    blend_factor = staticmethod(blend_factor)
    group_norm_names = staticmethod(group_norm_names)

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
