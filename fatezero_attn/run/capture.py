"""The inversion's capture: its UNet inputs, its per-row conditioning, the blend-level
cross-attention maps and, in cache mode, the fused layers' q and k (``source_cache.py``)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..edit.attention_fusion import head_mean_probs
from ..errors import FateZeroError
from ..store.source_cache import SourceCache


@dataclass
class Recorder:
    """What the inversion keeps. Only the sampler's own call of each step is recorded
    (guidance patches such as PAG call the UNet again at the same sigma)."""
    inv_sigmas: torch.Tensor
    unet_inputs: dict = field(default_factory=dict)
    cross_sum: dict = field(default_factory=dict)
    cross_count: dict = field(default_factory=dict)
    conds: dict | None = None         # per-row tensors of the inversion's call (c_crossattn, c_concat, y, ...)
    cache: SourceCache | None = None  # cache mode: the fused layers' q and k (source_cache.py)
    had_control: bool = False
    pending: int | None = None        # call j whose UNet input was just recorded
    inverted: torch.Tensor | None = None  # windowed: the sub-video's inverted latent (the sampler's output)
    columns: int | None = None  # keep the maps' first columns only (Wan: the prompt's, not umT5's 512)

    def record_input(self, j: int, x_in: torch.Tensor) -> None:
        self.unet_inputs[j] = x_in.detach().to("cpu", torch.float32, copy=True)
        self.pending = j

    def record_call(self, c: dict, rows: slice, batch: int, node: str) -> None:
        """Keep the positive chunk's per-row inputs (``rows`` of the call's ``batch`` rows)."""
        conds = {k: _one_row_if_same(v[rows] if v.shape[0] == batch else v).detach().to("cpu", copy=True)
                 for k, v in c.items() if torch.is_tensor(v) and k not in ("transformer_options", "control")}
        self.had_control = self.had_control or c.get("control") is not None
        if self.conds is None:
            self.conds = conds
        elif conds.keys() != self.conds.keys() or any(not torch.equal(conds[k], self.conds[k]) for k in conds):
            raise FateZeroError(f"{node}: the source conditioning changed between inversion steps "
                                f"({sorted(conds)}); FateZero replays one conditioning at every step. Connect a "
                                "plain CLIPTextEncode (with the model's own extra inputs) as source_conditioning.")

    def capture(self, j: int, q, k, heads: int, hw: tuple[int, int]) -> None:
        """Add one blend layer's cross-attention of call j (mean over heads) to the layer sum."""
        maps = head_mean_probs(q, k, heads, self.columns)  # [rows, frames*h*w, tokens]
        maps = maps.view(-1, *hw, maps.shape[-1])  # [frames, h, w, tokens] (a DiT row holds every frame)
        if j in self.cross_sum:
            self.cross_sum[j] += maps
            self.cross_count[j] += 1
        else:
            self.cross_sum[j] = maps
            self.cross_count[j] = 1


def _one_row_if_same(t: torch.Tensor) -> torch.Tensor:
    """``[frames, ...]`` -> ``[1, ...]`` when all rows are equal (the prompt's context is)."""
    return t[:1] if t.shape[0] > 1 and bool((t == t[:1]).all()) else t


def capture_call(rec: Recorder, seam, attn: str, key, q, k, extra: dict, info) -> None:
    """At the inversion's own call ``info.capture``: blend-level cross-attention maps of the first
    positive chunk, and the cache's q, k."""
    j = info.capture
    rows = info.chunk_rows(info.roles.index("cond"))
    if attn == "attn2" and seam.is_blend_layer(extra):
        rec.capture(j, q[rows], k[rows], extra["n_heads"], seam.map_grid(extra))
    if rec.cache is not None and rec.cache.holds(j, q.shape[1]):
        rec.cache.keep(j, attn, key, q[rows], k[rows])
