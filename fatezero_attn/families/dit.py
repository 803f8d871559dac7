"""The shared base of diffusion-transformer families: sites are the transformer blocks.

ComfyUI's DiTs route every ``optimized_attention`` of a block through
``transformer_options["optimized_attention_override"]``, which carries no site. So a per-block
``dit`` replace (``BlockTag``) copies the options with a fresh ``BlockSite``, and the override
(``BlockAttention``) counts the block's calls: the first is self-attention, and the family says
which one is the text cross-attention (the second, or the third where an image cross-attention
runs before it, as in Wan's image-to-video blocks); other calls run plain. Both compose with what another node put there before: its override is the
backend our plain and fused attention run on, its block replace is called inside ours.

One video is one row of ComfyUI's batch, so the tokens of all frames are one query sequence
``[T * h * w]`` (frame-major, as the patch embedding flattens them); the blend mask is laid out
the same way. A DiT has one 3D attention, so the spatio-temporal modes and video GroupNorm of
the SD path do not apply.
"""
from __future__ import annotations

import math
from typing import ClassVar

import torch

from .base import ModelFamily

SITE = "fatezero_block"  # transformer_options key of the block being run


class BlockSite:
    """One run of one block: its index, and how many attention calls it has made so far."""
    __slots__ = ("block", "calls")

    def __init__(self, block: int):
        self.block, self.calls = block, 0


def label_block(options: dict, block: int) -> dict:
    """A copy of ``options`` whose attention calls are labelled as block ``block``'s."""
    options = dict(options)
    options[SITE] = BlockSite(block)
    if "block_index" in options:  # ComfyUI >= 0.38 names the block being run
        options["block_index"] = block
    return options


class BlockTag:
    """The pack's ``("double_block", i)`` replace: labels block i's attention calls, then runs the
    block (through another node's replace that was there before, if any), through the call's
    ``block_hook`` when it has one (the source row walking beside the edit, ``run/source_blocks.py``)."""

    def __init__(self, block: int, previous=None):
        self.block, self.previous = block, previous

    def __call__(self, args: dict, extra: dict) -> dict:
        opts = label_block(args["transformer_options"], self.block)
        args = {**args, "transformer_options": opts}
        previous = self.previous
        run_block = extra["original_block"] if previous is None else (lambda a: previous(a, extra))
        hook = getattr(opts.get("fatezero"), "block_hook", None)
        return run_block(args) if hook is None else hook(self.block, args, run_block)


def attention_tensor(x):
    """The tensor in ComfyUI 0.38's ``AttentionTensorContainer`` (its one owner ``take()``s it;
    Wan's blocks pass q, k and v so), or ``x`` itself. By shape, not class: 0.3.75 has none."""
    take = getattr(x, "take", None)
    return take() if callable(take) and not torch.is_tensor(x) else x


class BlockAttention:
    """The pack's ``optimized_attention_override``: hands a labelled call to the dispatcher with
    the attention function the block would have used (``previous`` override, or ComfyUI's).
    ``text_call``: the number of the block's text cross-attention call (1 is self-attention).
    q, k and v arrive as tensors (0.38's ``wrap_attn`` unwraps containers for an override without
    ``container_function``) or, called otherwise, as containers, unwrapped here."""

    def __init__(self, dispatcher, previous=None, text_call: int = 2):
        self.dispatcher, self.previous, self.text_call = dispatcher, previous, text_call

    def __call__(self, func, *args, **kwargs):
        q, k, v = (attention_tensor(t) for t in args[:3])
        heads = args[3] if len(args) > 3 else kwargs.pop("heads")
        rest = args[4:]
        previous = self.previous

        def attend(q_, k_, v_, heads_):
            if previous is not None:
                return previous(func, q_, k_, v_, heads_, *rest, **kwargs)
            return func(q_, k_, v_, heads_, *rest, **kwargs)

        opts = kwargs.get("transformer_options") or {}
        site, info = opts.get(SITE), opts.get("fatezero")
        if site is None or info is None or rest or kwargs.get("mask") is not None or kwargs.get("skip_reshape"):
            return attend(q, k, v, heads)  # not a block the pack labelled, or a call shape it does not fuse
        site.calls += 1
        if site.calls not in (1, self.text_call):  # an image cross-attention (image-to-video blocks)
            return attend(q, k, v, heads)
        attn = "attn1" if site.calls == 1 else "attn2"
        extra = {"n_heads": heads, "fatezero": info, "block": site.block, "attention_fn": attend,
                 "sigmas": opts.get("sigmas")}
        return self.dispatcher(attn, q, k, v, extra)


def parse_blocks(text: str, depth: int, default: str) -> tuple[int, ...]:
    """``"0-14, 20"`` -> block indices; ``"auto"`` or empty -> ``default``; ``ValueError`` when out of range."""
    text = (text or "").strip().lower()
    if text in ("", "auto"):
        text = default
    if text == "all":
        return tuple(range(depth))
    if text == "none":
        return ()
    blocks: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, sep, hi = part.partition("-")
        try:
            lo_i = int(lo) if not lo.endswith("%") else int(float(lo[:-1]) / 100 * depth)
            hi_i = lo_i if not sep else (int(hi) if not hi.endswith("%") else math.ceil(float(hi[:-1]) / 100 * depth) - 1)
        except ValueError:
            raise ValueError(f"'{part}' is not a block number or a range like '0-14'") from None
        if not 0 <= lo_i <= hi_i < depth:
            raise ValueError(f"'{part}' is outside the model's blocks 0-{depth - 1}")
        blocks.update(range(lo_i, hi_i + 1))
    return tuple(sorted(blocks))


class DiTSeam:
    """A DiT's seam bound to one model: blocks ``0 .. depth-1``, the blend blocks chosen; the
    source row can walk its blocks beside the edit call (``source_by_block``)."""
    source_by_block = True
    label_block = staticmethod(label_block)

    def __init__(self, depth: int, blend_blocks: frozenset, patch_size: tuple[int, ...], text_call: int = 2):
        """``text_call``: which attention call of a block is the text cross-attention."""
        self.sites = list(range(depth))
        self.blend_blocks, self.patch_size, self.text_call = blend_blocks, patch_size, text_call

    @staticmethod
    def site_key(extra: dict):
        return extra.get("block")

    @staticmethod
    def runs_own_blocks(opts: dict, last_block: int) -> bool:
        """Whether a call with ``opts`` runs blocks ``0 .. last_block`` through the pack's replace
        (another node may replace one for a call of its own: SkipLayerGuidanceDiT skips one)."""
        table = opts.get("patches_replace", {}).get("dit", {})
        return all(isinstance(table.get(("double_block", b)), BlockTag) for b in range(last_block + 1))

    def is_blend_layer(self, extra: dict) -> bool:
        return extra.get("block") in self.blend_blocks

    @staticmethod
    def map_grid(extra: dict) -> tuple[int, int]:
        """The ``(h, w)`` token grid of one frame at this call (maps are ``[T, h, w, ...]``)."""
        return tuple(extra["fatezero"].grid[1:])

    @staticmethod
    def group_norm_names() -> list[str]:
        return []  # one 3D attention over the video; no per-frame GroupNorm to widen

    def take_over(self, model_patcher, dispatcher) -> None:
        """The override and one ``BlockTag`` per block, composed with another node's (kept inside)."""
        opts = model_patcher.model_options.setdefault("transformer_options", {})
        previous = opts.get("optimized_attention_override")
        if isinstance(previous, BlockAttention):  # an earlier FateZero patch: take its place
            previous = previous.previous
        opts["optimized_attention_override"] = BlockAttention(dispatcher, previous, self.text_call)
        table = opts.get("patches_replace", {}).get("dit", {})
        for block in self.sites:
            existing = table.get(("double_block", block))
            if isinstance(existing, BlockTag):
                existing = existing.previous
            model_patcher.set_model_patch_replace(BlockTag(block, existing), "dit", "double_block", block)

    def prepare_call(self, opts: dict, dispatcher) -> dict:
        """Per call: an override set after the fusion node (an attention backend) becomes the
        backend of ours rather than replacing it; no other node's replaces to compose per site."""
        current = opts.get("optimized_attention_override")
        if not (isinstance(current, BlockAttention) and current.dispatcher is dispatcher):
            opts["optimized_attention_override"] = BlockAttention(dispatcher, current, self.text_call)
        return {}

    def token_grid(self, x) -> tuple[int, int, int]:
        """``(T, h, w)`` tokens of a latent ``[B, C, T, H, W]`` (ComfyUI pads to the patch size)."""
        return tuple(math.ceil(n / p) for n, p in zip(tuple(x.shape)[2:], self.patch_size))


class DiTFamily(ModelFamily):
    """A video DiT on a flow schedule; fused and blend blocks by index (ranges in percent of the depth)."""
    inverter: ClassVar[str] = "flow"
    spatio_temporal: ClassVar[bool] = False
    blocks_by_index: ClassVar[bool] = True
    latent_blend: ClassVar[bool] = False  # not in this version: the blend mask acts in self-attention only
    default_fused_blocks: ClassVar[str] = "all"
    default_blend_blocks: ClassVar[str] = "all"

    @staticmethod
    def depth(diffusion_model) -> int:
        return len(diffusion_model.blocks)

    @staticmethod
    def text_call(diffusion_model) -> int:
        """Which attention call of a block is the text cross-attention (1 is self-attention)."""
        return 2

    def seam(self, diffusion_model, blend_choice: str = "") -> DiTSeam:
        depth = self.depth(diffusion_model)
        blend = frozenset(parse_blocks(blend_choice, depth, self.default_blend_blocks))
        return DiTSeam(depth, blend, tuple(diffusion_model.patch_size), self.text_call(diffusion_model))

    def fused_sites(self, diffusion_model, choice: str = "") -> frozenset:
        return frozenset(parse_blocks(choice, self.depth(diffusion_model), self.default_fused_blocks))
