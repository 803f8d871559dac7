"""The source cache: what the fused kernels read from the source row, kept from the inversion.

The store's two modes (chosen on the inversion node, ``store_mode``):
- ``recompute``: the store keeps the latent trajectory; each fused edit step runs the source
  row once more (the inversion's call) and reads its queries and keys. Smallest store; an
  edit costs more time than plain sampling (the measured ratios: README, "Memory and time").
- ``cache``: during inversion the same tensors are kept, for every fused layer of the calls
  whose edit step lies inside the cached window: self-attention's queries and the keys of the
  frames the spatio-temporal mode reads (``middle``: the middle frame alone), cross-attention's
  queries and keys (one row: every frame has the same prompt). An edit step moves one step's
  tensors to the device and skips the source row. They come from the very call the source row
  would repeat, so both modes give the same edit.

Tensors stay in the dtype the attention runs in (fp16 for a GPU fp16 model, fp32 on CPU), in
CPU memory.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..edit import temporal
from ..families.sd_layout import AttnLayer

STORE_MODES = ("auto", "recompute", "cache")
AUTO_SHARE = 0.5    # auto: cache when it takes at most this share of the free memory
REFUSE_SHARE = 0.9  # cache: refused above this share (the edit needs memory too)


@dataclass
class SourceCache:
    frames: int
    temporal_mode: str
    temporal_min_channels: int
    steps: int  # edit steps k < steps are cached (inversion calls j >= total_steps - steps)
    # inversion call j -> (attn, (block, number, depth)) -> (q [frames, n, C], k)
    calls: dict = field(default_factory=dict)
    max_query: int = 32 * 32  # the fused layers' largest query length (the family's fuse_max_query, families/)

    @classmethod
    def for_inversion(cls, frames: int, temporal_mode: str, min_channels: int, total_steps: int,
                      steps: int, max_query: int) -> "SourceCache":
        """An empty cache expecting the inversion calls of the last ``steps`` edit steps."""
        return cls(frames, temporal_mode, min_channels, steps, {j: {} for j in range(total_steps - steps, total_steps)},
                   max_query)

    def holds(self, j: int, query_length: int) -> bool:
        """Whether the cache keeps a layer of this query length at inversion call ``j``."""
        return j in self.calls and query_length <= self.max_query

    def gathered(self, attn: str, channels: int) -> bool:
        return temporal.gathers(attn, self.temporal_mode, channels, self.temporal_min_channels)

    def keep(self, j: int, attn: str, key: tuple, q: torch.Tensor, k: torch.Tensor) -> None:
        """Keep one chunk's ``q`` and its un-gathered ``k`` ``[frames, tokens, C]`` of inversion call ``j``."""
        if self.gathered(attn, q.shape[-1]):
            k = k[temporal.read_frames(self.temporal_mode, self.frames)]  # the frames some frame reads
        elif attn == "attn2" and bool((k == k[:1]).all()):
            k = k[:1]  # the prompt's keys, the same for every frame
        copy = lambda t: t.detach().to("cpu", copy=True)
        self.calls.setdefault(j, {})[(attn, key)] = (copy(q), copy(k))

    def read(self, j: int, device: torch.device) -> dict:
        """Call ``j``'s tensors on ``device`` as the fused kernels take them: ``(attn, key) -> (q, k)``
        with self-attention keys gathered per frame."""
        out = {}
        for (attn, key), (q, k) in self.calls[j].items():
            q, k = q.to(device), k.to(device)
            if self.gathered(attn, q.shape[-1]):
                k = temporal.gather_read_frames(k, self.frames, self.temporal_mode)
            elif k.shape[0] != self.frames:
                k = k.expand(self.frames, *k.shape[1:]).contiguous()
            out[(attn, key)] = (q, k)
        return out

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for layers in self.calls.values()
                   for pair in layers.values() for t in pair)

    # -- files: flat tensor names ----------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"cache.{j}.{attn}.{'.'.join(map(str, key))}.{part}": t
                for j, layers in self.calls.items() for (attn, key), pair in layers.items()
                for part, t in zip("qk", pair)}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Read ``tensors()``'s names back; ``ValueError`` on a name or layer that does not fit."""
        for name, t in tensors.items():
            parts = name.split(".")
            if len(parts) != 7 or parts[2] not in ("attn1", "attn2") or parts[6] not in ("q", "k") \
                    or not all(p.isdigit() for p in (parts[1], parts[4], parts[5])):
                raise ValueError(f"unexpected source cache tensor {name!r}")
            _, j, attn, block, number, depth, part = parts
            layer = self.calls.setdefault(int(j), {}).setdefault((attn, (block, int(number), int(depth))), [None, None])
            layer["qk".index(part)] = t
        for layers in self.calls.values():
            for lk, pair in layers.items():
                if None in pair:
                    raise ValueError(f"the source cache lacks q or k of {lk}")
                layers[lk] = tuple(pair)

    def check(self, total_steps: int) -> None:
        """Every expected call with the same layers, one row per frame (``ValueError`` otherwise)."""
        wanted = set(range(total_steps - self.steps, total_steps))
        if set(self.calls) != wanted:
            raise ValueError(f"the source cache holds calls {sorted(self.calls)}, metadata says the last "
                             f"{self.steps} of {total_steps}")
        layer_sets = {tuple(layers) for layers in self.calls.values()}
        if len(layer_sets) > 1:
            raise ValueError("the source cache's calls do not hold the same layers")
        read = len(temporal.read_frames(self.temporal_mode, self.frames))
        for layers in self.calls.values():
            for (attn, key), (q, k) in layers.items():
                if q.shape[0] != self.frames or k.shape[0] not in (1, read, self.frames):
                    raise ValueError(f"the source cache's {attn} of {key} has {q.shape[0]} query rows and "
                                     f"{k.shape[0]} key rows for {self.frames} frames")


def cached_steps(steps: int, replace_steps: float) -> int:
    """Edit steps the cache covers: the larger of the cross and self windows at ``replace_steps``
    (``schedule.replace_step_counts``), so fusion node fractions up to it never recompute."""
    return min(steps, int(replace_steps * (steps + 1)))


def estimate_bytes(layers: list[AttnLayer], frames: int, steps: int, temporal_mode: str, min_channels: int,
                   max_query: int, element_size: int, context_tokens: int = 77) -> int:
    """The cache's size, from the UNet's shapes (equal to ``SourceCache.nbytes()`` after the inversion)."""
    read = len(temporal.read_frames(temporal_mode, frames))
    per_step = 0
    for layer in layers:
        if layer.q > max_query:
            continue
        key_frames = read if temporal.gathers("attn1", temporal_mode, layer.channels, min_channels) else frames
        per_step += (frames + key_frames) * layer.q * layer.channels  # self: q, k
        per_step += frames * layer.q * layer.channels + context_tokens * layer.cross_channels  # cross: q, one row of k
    return per_step * steps * element_size


def choose_mode(requested: str, estimate: int, free: int) -> str | None:
    """``recompute`` or ``cache``; None when ``cache`` was asked for and would not fit."""
    if requested == "recompute" or estimate == 0:  # nothing to cache (no fused step or layer)
        return "recompute"
    if requested == "auto":
        return "cache" if estimate <= AUTO_SHARE * free else "recompute"
    return "cache" if estimate <= REFUSE_SHARE * free else None
