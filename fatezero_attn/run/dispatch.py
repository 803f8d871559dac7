"""The row dispatcher: what each attention call of a model call returns, by row.

The model wrapper (``patch.py``) labels the chunks of rows in the call's ``CallInfo``: ``cond``
rows of the target prompt are fused with the source row's attention (``edit/attention_fusion.py``)
within the replace steps; ``uncond`` and ``other`` rows get plain attention; every row gets the
spatio-temporal keys of the temporal mode (``edit/temporal.py``); the ``source`` pass keeps its
q and k (``source_row.py``); the inversion's call is captured (``capture.py``) and the edit's
target maps summed (``latent_blend.py``). Another node's replace on the site is composed by
``composition.py``, which calls back ``Dispatcher.rows``.
"""
from __future__ import annotations

import inspect
from typing import Callable

import comfy.ldm.modules.attention as comfy_attention
import torch

from ..edit import temporal
from ..edit.attention_fusion import fused_cross_attention, fused_self_attention
from ..errors import FateZeroError
from . import capture, latent_blend
from .call_info import CallInfo
from .composition import Composition
from .source_row import keep_source_layer

# ComfyUI >= 0.3.6x reads an attention-backend override from ``transformer_options``.
_ATTN_TAKES_OPTIONS = any(p.kind is p.VAR_KEYWORD or p.name == "transformer_options"
                          for p in inspect.signature(comfy_attention.optimized_attention).parameters.values())


def plain_attention(q, k, v, heads: int, extra: dict) -> torch.Tensor:
    """ComfyUI's attention as the layer itself would call it (its precision, the user's backend;
    a DiT's override hands over the function the block called, ``extra["attention_fn"]``)."""
    if "attention_fn" in extra:
        return extra["attention_fn"](q, k, v, heads)
    precision = extra.get("attn_precision")
    if _ATTN_TAKES_OPTIONS:
        return comfy_attention.optimized_attention(q, k, v, heads, attn_precision=precision,
                                                   transformer_options=extra)
    return comfy_attention.optimized_attention(q, k, v, heads, attn_precision=precision)


class Dispatcher:
    """One per patched MODEL: every attention site's call goes through ``__call__``."""

    def __init__(self, seam, temporal_mode: str = "per-frame", temporal_min_channels: int = 0,
                 node: str = "FateZero", composition: Composition | None = None, patched: bool = False):
        """``seam``: the model family's attention seam bound to this model (``families/``);
        ``patched``: the MODEL is an inversion's or an edit's (a call without the pack's model
        wrapper is then an error, not spatio-temporal attention alone)."""
        self.seam, self.node = seam, node
        self.temporal_mode, self.temporal_min_channels = temporal_mode, temporal_min_channels
        self.composition = composition if composition is not None else Composition(seam)
        self.patched = patched
        self.plain: Callable = plain_attention

    def __deepcopy__(self, memo):
        # ModelPatcher.clone() deep-copies model_options in 0.3.75: the clones' replaces and
        # overrides keep this dispatcher (fixed at install), so each is recognised as the pack's.
        return self

    def __call__(self, attn: str, q, k, v, extra: dict) -> torch.Tensor:
        info = self.call_info(q, extra)
        return self.composition.call(attn, q, k, v, extra, info, self.seam.site_key(extra), self.rows)

    def rows(self, attn: str, q, k, v, extra: dict, info: CallInfo, key, other_out) -> torch.Tensor:
        """The call's rows, by role. ``other_out``: another node's replace on this site, its output
        for all rows, or None."""
        heads, chunk, step, run = extra["n_heads"], info.chunk, info.step, info.run
        gathered = temporal.gathers(attn, self.temporal_mode, q.shape[-1], self.temporal_min_channels)
        kt = temporal.gather_frames(k, chunk, self.temporal_mode) if gathered else k
        vt = temporal.gather_frames(v, chunk, self.temporal_mode) if gathered else v
        if info.capture is not None:
            capture.capture_call(run.recorder, self.seam, attn, key, q, k, extra, info)
        if info.target and attn == "attn2" and self.seam.is_blend_layer(extra):
            latent_blend.sum_target_maps(run, self.seam.map_grid(extra), q, k, heads, info)
        if info.roles == ["source"]:
            keep_source_layer(info, attn, key, q, kt if attn == "attn1" else k)
            return self.unfused(q, k, v, kt, vt, heads, other_out, gathered, extra)
        plan = run.plan if run is not None else None
        fused_rows = info.rows("cond")
        if not (plan is not None and step is not None and plan.fuses(key, q.shape[1]) and fused_rows
                and info.source is not None and step < plan.replace_steps(attn)):
            return self.unfused(q, k, v, kt, vt, heads, other_out, gathered, extra)
        # a walked source row's q, k are used once: dropped here, before the rest of the block runs
        take = info.source.qk.pop if info.source.by_block else info.source.qk.get
        q_src, k_src = take((attn, key), (None, None))
        if q_src is not None:  # a cache read from a file may hold another dtype (fp32 from a CPU inversion)
            q_src, k_src = q_src.to(q), k_src.to(q)
        if q_src is None or q_src.shape[1] != q.shape[1]:
            raise FateZeroError(
                f"{self.node}: at {attn} of block {key} the edit has {q.shape[1]} query positions and the source row "
                f"{'none' if q_src is None else q_src.shape[1]}: a node applied after {self.node} changes the UNet's "
                "resolution inside the model (e.g. Kohya Deep Shrink, token merging). Apply it before the inversion "
                f"and {self.node}, or leave it out. On the sampler node: connect {self.node}'s MODEL output.")
        attend = lambda q_, k_, v_, h_: self.plain(q_, k_, v_, h_, extra)
        keep_edit = None  # the blend mask: where the edit keeps its own self-attention
        if attn == "attn1":
            if plan.blend is not None:  # [frames, h*w, 1] -> one row's queries [rows, tokens, 1]
                keep_edit = plan.blend.keep_edit(plan.inversion_call(step), self.seam.map_grid(extra),
                                                 q.device).reshape(-1, q.shape[1], 1)
            fuse = lambda rows, plain: fused_self_attention(q_src, k_src, vt[rows], heads, plain, keep_edit,
                                                            attn=attend)
        else:
            R, D = run.cross_weights(step)
            fuse = lambda rows, plain: fused_cross_attention(q_src, k_src, q[rows], k[rows], v[rows], R, D, heads,
                                                             attn=attend)
        if other_out is None and keep_edit is None:
            # plain attention only for the rows that are not fused
            out = q.new_empty(q.shape[0], q.shape[1], v.shape[-1])
            plain_rows = [r for r in range(len(info.roles)) if r not in fused_rows]
            if plain_rows:
                idx = torch.cat([torch.arange(r * chunk, (r + 1) * chunk, device=q.device) for r in plain_rows])
                out[idx] = self.plain(q[idx], kt[idx], vt[idx], heads, extra)
            for r in fused_rows:
                rows = info.chunk_rows(r)
                out[rows] = fuse(rows, None)
            return out
        out = self.unfused(q, k, v, kt, vt, heads, other_out, gathered, extra)
        if out is other_out:  # the other patch's tensor (PAG returns its v): fused rows go into a copy
            out = out.clone()
        for r in fused_rows:
            rows = info.chunk_rows(r)
            if other_out is None:
                out[rows] = fuse(rows, out[rows])
            else:  # the fused output plus the other patch's change to the plain output
                plain = self.plain(q[rows], kt[rows], vt[rows], heads, extra)
                out[rows] = fuse(rows, plain) + (out[rows] - plain)
        return out

    def unfused(self, q, k, v, kt, vt, heads, other_out, gathered: bool, extra: dict) -> torch.Tensor:
        """What the rows get without fusion: the other node's patch as without the pack; with
        spatio-temporal keys at this layer, that patch's change added to the spatio-temporal output."""
        if other_out is None:
            return self.plain(q, kt, vt, heads, extra)
        if gathered:
            return other_out - self.plain(q, k, v, heads, extra) + self.plain(q, kt, vt, heads, extra)
        return other_out

    def call_info(self, q, extra: dict) -> CallInfo:
        info = extra.get("fatezero")
        if info is not None:
            return info
        if self.patched:
            raise FateZeroError(
                f"{self.node}: the UNet ran without FateZero's model wrapper: a node applied after {self.node} "
                "replaced it (set_model_unet_function_wrapper), which would silently turn the edit off. Apply that "
                f"node before the inversion and {self.node}. On the sampler node: connect {self.node}'s MODEL output "
                "(or a node that keeps its wrapper).")
        # spatio-temporal only, under another node's wrapper: one chunk per branch
        return CallInfo([], q.shape[0] // max(len(extra.get("cond_or_uncond", [0])), 1),
                        other_patches=self.composition.patches_at_install)
