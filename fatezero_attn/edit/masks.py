"""Blend masks from the source cross-attention of the edited words (FateZero section 3).

The recipe of the authors' code, step by step: the inversion-time cross-attention at
the blend level (the 16x16 layers of a 512x512 video: 1/4 of the latent's size), mean
over heads and layers (done at capture), summed over the blend words' token columns,
3x3 max-pool (stride 1, padding 1), nearest resize to the layer's resolution, divided by
each frame's spatial maximum, then ``mask = value > tau``. Inside the mask the edit keeps
its own self-attention; outside it takes the source's.

A mask the user already has (a MASK, e.g. from a video segmentation) can take the words' place
or be intersected with it: its frames are mapped to the frames of the blend maps
(``region_frames``) and resampled to each layer's grid (``region_mask``).
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


# A cell of a layer's grid is in a given mask when more than half of it is covered (strictly, as
# tau is a strict threshold): the mask is resampled by area, so each cell is the mean of the
# pixels it spans, and a soft mask's cell is in when its mean value is above one half.
REGION_COVER = 0.5


def region_mask(region: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A given mask ``[frames, H, W]`` (0..1, any size) -> boolean ``[frames, h, w]`` at a layer's
    size: each cell's mean over the pixels it spans (area resampling) > ``REGION_COVER``."""
    covered = F.interpolate(region[:, None].float(), size=size, mode="area")[:, 0]
    return covered > REGION_COVER


def region_frames(mask: torch.Tensor, sources: list[list[int]]) -> torch.Tensor:
    """A MASK ``[frames, H, W]`` (``[1, H, W]``: the same for every frame) -> ``[map frames, H, W]``
    float32, ``sources[i]`` the video frames of map frame ``i``: each takes their union (maximum).

    The union, not the mean: a video VAE's latent frame (Wan's: four frames) carries what is in
    any of its frames, as its cross-attention map does; a moving object's mean over the frames
    drops below the threshold along its path, which would leave that path under the source's
    self-attention, i.e. keep the old object's structure there."""
    mask = mask.float()
    if mask.shape[0] == 1:
        return mask.expand(len(sources), *mask.shape[1:]).contiguous()
    return torch.stack([mask[frames].amax(0) for frames in sources])


def crop_like_vae(mask: torch.Tensor, video_hw: tuple[int, int], scale: int) -> torch.Tensor:
    """A mask the size of the frames given to VAE Encode, which centre-crops each side to a
    multiple of ``scale``, cut the same way, so it stays on the pixels the latent holds; a mask
    of any other size is returned as it is (it is stretched over the frame)."""
    h, w = mask.shape[-2:]
    if (h, w) == tuple(video_hw) or (h // scale * scale, w // scale * scale) != tuple(video_hw):
        return mask
    top, left = (h % scale) // 2, (w % scale) // 2
    return mask[..., top:top + video_hw[0], left:left + video_hw[1]]


def latent_blend_steps(steps: int, start: float = LATENT_BLEND_START, end: float = LATENT_BLEND_END) -> range:
    """Edit steps after which latents are blended (the authors': steps 2 to 6 of 10)."""
    return range(int(start * steps), int(end * steps) - 1)


def blend_latents(z: torch.Tensor, z_inv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Keep the edit inside ``mask`` ``[frames, H, W]``, the inverted latent outside."""
    return z_inv + mask[:, None].to(z) * (z - z_inv)


@dataclass
class BlendMask:
    """Per-step blend maps and their threshold; resolved per layer size on demand.

    ``region``: a given mask per frame of the maps; with ``words`` the mask is the words' mask
    AND the region, without words the region alone (``pooled`` is then ``[steps, frames, 0, 0]``).
    With ``latent_blend`` the fusion also blends latents with the union of this mask and
    the mask of ``target_words`` in the edit's own cross-attention."""
    pooled: torch.Tensor  # [steps, frames, h, w], indexed by inversion call j
    tau: float
    words: list[str]
    latent_blend: bool = False
    target_words: list[str] = field(default_factory=list)
    region: torch.Tensor | None = None  # [frames, H, W] float 0..1 (region_frames)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def mask(self, j: int, size: tuple[int, int]) -> torch.Tensor:
        """Boolean ``[frames, H, W]``: where the edit keeps its own self-attention at call j."""
        if self.region is None:
            return threshold_mask(self.pooled[j], size, self.tau)
        key = ("region", size)  # the same at every call: resampled once per size
        if key not in self._cache:
            self._cache[key] = region_mask(self.region, size)
        if not self.words:
            return self._cache[key]
        return threshold_mask(self.pooled[j], size, self.tau) & self._cache[key]

    def keep_edit(self, j: int, size: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
        """Mask ``[frames, H*W, 1]`` (1 = keep the edit's own self-attention) for call j, on
        ``device``; kept, as every fused self-attention call of the step asks for it again."""
        key = (j, size, str(device))
        if key not in self._cache:
            self._cache[key] = self.mask(j, size).flatten(1)[..., None].float().to(device)
        return self._cache[key]

    def rows(self, rows: slice) -> "BlendMask":
        """The mask of some frames (a window's sub-video rows of a windowed store)."""
        region = self.region[rows] if self.region is not None else None
        return replace(self, pooled=self.pooled[:, rows], region=region, _cache={})

    def preview(self, size: tuple[int, int]) -> torch.Tensor:
        """MASK ``[frames, H, W]``: the share of the fused steps in which a pixel is in the mask."""
        masks = torch.stack([self.mask(j, size).float() for j in range(self.pooled.shape[0])])
        return masks.mean(0)
