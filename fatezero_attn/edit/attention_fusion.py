"""Attention fusion, written on attention *outputs* so no map is ever materialised.

With ``P = softmax(q k^T / sqrt(d))`` and ``attn(q, k, v) = P v``:
- self-attention, blended: ``M * P_edit v + (1 - M) * P_src v = M * attn(q_e, k_e, v) +
  (1 - M) * attn(q_s, k_s, v)`` (M selects query rows);
- cross-attention: every Prompt-to-Prompt variant (replace, refine, reweight, per-word
  windows) fuses as ``P = P_src R + P_edit diag(D)``, hence
  ``P v = attn(q_s, k_s, R v) + attn(q_e, k_e, D * v)``.
The tests check both against the maps computed the naive way.
"""
from __future__ import annotations

from typing import Callable

import torch

AttnFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """``[B, N, heads*d]`` attention with torch's fused kernel."""
    b, _, inner = q.shape
    split = lambda t: t.view(b, -1, heads, inner // heads).transpose(1, 2)  # -> [B, heads, N, d]
    out = torch.nn.functional.scaled_dot_product_attention(split(q), split(k), split(v))
    return out.transpose(1, 2).reshape(b, -1, inner)


def attention_probs(q: torch.Tensor, k: torch.Tensor, heads: int) -> torch.Tensor:
    """The attention map ``[B, heads, Nq, Nk]`` (for capture and for tests)."""
    b, nq, inner = q.shape
    d = inner // heads
    qh = q.view(b, nq, heads, d).transpose(1, 2)
    kh = k.view(b, -1, heads, d).transpose(1, 2)
    return (qh @ kh.transpose(-1, -2) * d ** -0.5).softmax(-1)


def head_mean_probs(q: torch.Tensor, k: torch.Tensor, heads: int, columns: int | None = None,
                    chunk: int = 4096) -> torch.Tensor:
    """The map averaged over heads, ``[B, Nq, columns]`` float32, computed ``chunk`` queries at a
    time so a video's full map over every head is never held."""
    q, k = q.float(), k.float()
    parts = [attention_probs(q[:, i:i + chunk], k, heads).mean(1)[..., :columns] for i in range(0, q.shape[1], chunk)]
    return torch.cat(parts, 1)


def cross_weights(S: torch.Tensor, aligned: torch.Tensor, equalizer: torch.Tensor,
                  active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(R, D)`` of ``P = P_src R + P_edit diag(D)`` at one step.

    ``S`` the mapper, ``aligned`` 1 where the target token takes a source column, 0 for
    refine's new tokens; ``equalizer`` the reweight of each target token; ``active`` 1 for
    target tokens inside their cross-replace window at this step.
    """
    scale = equalizer * active
    R = S * (aligned * scale)[None, :]
    D = (1 - aligned) * scale + (1 - active)
    return R, D


def fused_cross_attention(q_src: torch.Tensor, k_src: torch.Tensor, q_edit: torch.Tensor,
                          k_edit: torch.Tensor, v_edit: torch.Tensor, R: torch.Tensor,
                          D: torch.Tensor, heads: int, attn: AttnFn = sdpa) -> torch.Tensor:
    v_src_cols = torch.einsum("st,btc->bsc", R.to(v_edit), v_edit)  # R v: values seen through the source columns
    out = attn(q_src, k_src, v_src_cols, heads)
    if bool((D != 0).any()):
        out = out + attn(q_edit, k_edit, v_edit * D.to(v_edit)[None, :, None], heads)
    return out


def fused_self_attention(q_src: torch.Tensor, k_src: torch.Tensor, v_edit: torch.Tensor, heads: int,
                         edit_out: torch.Tensor | None = None, keep_edit: torch.Tensor | None = None,
                         attn: AttnFn = sdpa) -> torch.Tensor:
    """``s_src`` applied to the edit's values; where ``keep_edit`` ``[B, Nq, 1]`` is 1 the
    edit's own attention output ``edit_out`` is kept (the blend mask)."""
    out = attn(q_src, k_src, v_edit, heads)
    if keep_edit is None:
        return out
    keep_edit = keep_edit.to(out)
    return keep_edit * edit_out + (1 - keep_edit) * out
