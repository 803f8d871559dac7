"""The per-call row dispatcher: what each attention call of a UNet call returns, by row.

The model wrapper (``hooks.py``) labels the chunks of rows in ``transformer_options["fatezero"]``
(``plan.call_info``): ``cond`` rows of the target prompt are fused with the source row's
attention (``fusion.py``) within the replace steps; ``uncond`` and ``other`` rows get plain
attention; every row gets the spatio-temporal keys of the temporal mode (``temporal.py``); the
``source`` pass keeps its q and k (``source_call.py``); the inversion's call is captured
(``capture.py``) and the edit's target maps summed (``latent_blend.py``). Another node's replace
on the site is composed by ``composition.py``. Mixed into ``FateZeroPatch``.
"""
from __future__ import annotations

import inspect

import torch

import comfy.ldm.modules.attention as comfy_attention

from . import temporal
from .errors import FateZeroError
from .fusion import fused_cross_attention, fused_self_attention
from .plan import call_info

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


class RowDispatch:
    _plain = staticmethod(plain_attention)

    def attn1(self, q, k, v, extra: dict, **_) -> torch.Tensor:
        return self._dispatch("attn1", q, k, v, extra)

    def attn2(self, q, k, v, extra: dict, **_) -> torch.Tensor:
        return self._dispatch("attn2", q, k, v, extra)

    def _dispatch(self, attn: str, q, k, v, extra: dict) -> torch.Tensor:
        info = self._call_info(q, extra)
        return self._with_other_patch(attn, q, k, v, extra, info, self.model.site_key(extra))

    def _dispatch_rows(self, attn: str, q, k, v, extra: dict, info: dict, key, other_out) -> torch.Tensor:
        """``other_out``: another node's replace on this site, its output for all rows, or None."""
        heads, chunk, step = extra["n_heads"], info["chunk"], info["step"]
        gathered = temporal.gathers(attn, self.temporal_mode, q.shape[-1], self.temporal_min_channels)
        kt = temporal.gather_frames(k, chunk, self.temporal_mode) if gathered else k
        vt = temporal.gather_frames(v, chunk, self.temporal_mode) if gathered else v
        if info["capture"] is not None:
            self._capture_call(attn, key, q, k, extra, info)
        if info["target"] and attn == "attn2" and self.model.is_blend_layer(extra, self.blend_layers):
            self._sum_target_maps(q, k, extra, info)
        if info["roles"] == ["source"]:
            return self._source_layer(attn, key, q, k, v, kt, vt, other_out, gathered, extra)
        plan = self.fusion
        fused_rows = [r for r, role in enumerate(info["roles"]) if role == "cond"]
        if not (plan is not None and step is not None and plan.fuses(key, q.shape[1]) and fused_rows
                and info["source"] is not None and step < plan.replace_steps(attn)):
            return self._unfused(q, k, v, kt, vt, heads, other_out, gathered, extra)
        q_src, k_src = info["source"].qk.get((attn, key), (None, None))
        if q_src is not None:  # a cache read from a file may hold another dtype (fp32 from a CPU inversion)
            q_src, k_src = q_src.to(q), k_src.to(q)
        if q_src is None or q_src.shape[1] != q.shape[1]:
            raise FateZeroError(
                f"{self.node}: at {attn} of block {key} the edit has {q.shape[1]} query positions and the source row "
                f"{'none' if q_src is None else q_src.shape[1]}: a node applied after {self.node} changes the UNet's "
                "resolution inside the model (e.g. Kohya Deep Shrink, token merging). Apply it before the inversion "
                f"and {self.node}, or leave it out. On the sampler node: connect {self.node}'s MODEL output.")
        attend = lambda q_, k_, v_, h_: self._plain(q_, k_, v_, h_, extra)
        keep_edit = None  # the blend mask: where the edit keeps its own self-attention
        if attn == "attn1":
            if plan.blend is not None:  # [frames, h*w, 1] -> one row's queries [rows, tokens, 1]
                keep_edit = plan.blend.keep_edit(plan.store.info.steps - 1 - step, self.model.map_grid(extra),
                                                 q.device).reshape(-1, q.shape[1], 1)
            fuse = lambda rows, plain: fused_self_attention(q_src, k_src, vt[rows], heads, plain, keep_edit,
                                                            attn=attend)
        else:
            R, D = plan.cross_weights(step)
            fuse = lambda rows, plain: fused_cross_attention(q_src, k_src, q[rows], k[rows], v[rows], R, D, heads,
                                                             attn=attend)
        if other_out is None and keep_edit is None:
            # plain attention only for the rows that are not fused
            out = q.new_empty(q.shape[0], q.shape[1], v.shape[-1])
            plain_rows = [r for r in range(len(info["roles"])) if r not in fused_rows]
            if plain_rows:
                idx = torch.cat([torch.arange(r * chunk, (r + 1) * chunk, device=q.device) for r in plain_rows])
                out[idx] = self._plain(q[idx], kt[idx], vt[idx], heads, extra)
            for r in fused_rows:
                rows = slice(r * chunk, (r + 1) * chunk)
                out[rows] = fuse(rows, None)
            return out
        out = self._unfused(q, k, v, kt, vt, heads, other_out, gathered, extra)
        if out is other_out:  # the other patch's tensor (PAG returns its v): fused rows go into a copy
            out = out.clone()
        for r in fused_rows:
            rows = slice(r * chunk, (r + 1) * chunk)
            if other_out is None:
                out[rows] = fuse(rows, out[rows])
            else:  # the fused output plus the other patch's change to the plain output
                plain = self._plain(q[rows], kt[rows], vt[rows], heads, extra)
                out[rows] = fuse(rows, plain) + (out[rows] - plain)
        return out

    def _unfused(self, q, k, v, kt, vt, heads, other_out, gathered: bool, extra: dict) -> torch.Tensor:
        """What the rows get without fusion: the other node's patch as without the pack; with
        spatio-temporal keys at this layer, that patch's change added to the spatio-temporal output."""
        if other_out is None:
            return self._plain(q, kt, vt, heads, extra)
        if gathered:
            return other_out - self._plain(q, k, v, heads, extra) + self._plain(q, kt, vt, heads, extra)
        return other_out

    def _call_info(self, q, extra: dict) -> dict:
        info = extra.get("fatezero")
        if info is not None:
            return info
        if self.fusion is not None or self.recorder is not None:
            raise FateZeroError(
                f"{self.node}: the UNet ran without FateZero's model wrapper: a node applied after {self.node} "
                "replaced it (set_model_unet_function_wrapper), which would silently turn the edit off. Apply that "
                f"node before the inversion and {self.node}. On the sampler node: connect {self.node}'s MODEL output "
                "(or a node that keeps its wrapper).")
        # spatio-temporal only, under another node's wrapper: one chunk per branch
        return call_info([], q.shape[0] // max(len(extra.get("cond_or_uncond", [0])), 1),
                         other_patches=self.patches_at_install)
