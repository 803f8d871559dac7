"""Blend masks from the source cross-attention of the edited words (FateZero section 3).

The recipe of the authors' code, step by step: the inversion-time cross-attention at
the blend level (the 16x16 layers of a 512x512 video: 1/4 of the latent's size), mean
over heads and layers (done at capture), summed over the blend words' token columns,
3x3 max-pool (stride 1, padding 1), nearest resize to the layer's resolution, divided by
each frame's spatial maximum, then ``mask = value > tau``. Inside the mask the edit keeps
its own self-attention; outside it takes the source's.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from ..defaults import LATENT_BLEND_END, LATENT_BLEND_START


def word_maps(cross_maps: torch.Tensor, positions: list[int]) -> torch.Tensor:
    """``[steps, frames, h, w, 77]`` -> the words' 3x3-max-pooled map ``[steps, frames, h, w]``."""
    summed = cross_maps[..., positions].float().sum(-1)
    steps, frames, h, w = summed.shape
    pooled = F.max_pool2d(summed.view(steps * frames, 1, h, w), 3, stride=1, padding=1)
    return pooled.view(steps, frames, h, w)


def threshold_mask(pooled: torch.Tensor, size: tuple[int, int], tau: float) -> torch.Tensor:
    """``[frames, h, w]`` pooled map -> boolean mask ``[frames, H, W]`` at a layer's size."""
    resized = F.interpolate(pooled[:, None], size=size, mode="nearest")[:, 0]
    peak = resized.amax(dim=(1, 2), keepdim=True).clamp_min(torch.finfo(resized.dtype).tiny)
    return (resized / peak) > tau


def latent_blend_steps(steps: int, start: float = LATENT_BLEND_START, end: float = LATENT_BLEND_END) -> range:
    """Edit steps after which latents are blended (the authors': steps 2 to 6 of 10)."""
    return range(int(start * steps), int(end * steps) - 1)


def blend_latents(z: torch.Tensor, z_inv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Keep the edit inside ``mask`` ``[frames, H, W]``, the inverted latent outside."""
    return z_inv + mask[:, None].to(z) * (z - z_inv)


@dataclass
class BlendMask:
    """Per-step blend maps and their threshold; resolved per layer size on demand.

    With ``latent_blend`` the fusion also blends latents with the union of this mask and
    the mask of ``target_words`` in the edit's own cross-attention."""
    pooled: torch.Tensor  # [steps, frames, h, w], indexed by inversion call j
    tau: float
    words: list[str]
    latent_blend: bool = False
    target_words: list[str] = field(default_factory=list)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def keep_edit(self, j: int, size: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
        """Mask ``[frames, H*W, 1]`` (1 = keep the edit's own self-attention) for call j, on
        ``device``; kept, as every fused self-attention call of the step asks for it again."""
        key = (j, size, str(device))
        if key not in self._cache:
            m = threshold_mask(self.pooled[j], size, self.tau)
            self._cache[key] = m.flatten(1)[..., None].float().to(device)
        return self._cache[key]

    def rows(self, rows: slice) -> "BlendMask":
        """The mask of some frames (a window's sub-video rows of a windowed store)."""
        return replace(self, pooled=self.pooled[:, rows], _cache={})

    def preview(self, size: tuple[int, int]) -> torch.Tensor:
        """MASK ``[frames, H, W]``: the share of the fused steps in which a pixel is in the mask."""
        masks = torch.stack([threshold_mask(p, size, self.tau).float() for p in self.pooled])
        return masks.mean(0)
