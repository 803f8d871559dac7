"""A small video world whose generator knows the truth: one object (a colour, a shape, a
motion) over a textured background, with a caption and the object's mask in every frame.

It lives in Wan's latent space: a clip is a latent ``[16, T, H, W]`` (16 channels, ``T`` latent
frames of ``H x W``), made from an RGB picture at the latent's resolution by a fixed linear
encoder (``ENCODE``, 3 -> 16 channels, seeded); ``decode`` is its least-squares inverse, for
pictures and for reading colours back. Nothing about the object's place is in the caption: the
model must choose one place for all of the object's tokens (self-attention) and move it from
frame to frame (attention across frames). Each clip varies its background (phase, scale,
brightness) and jitters the object's colour, so no two clips share a latent.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

CHANNELS, FRAMES, SIZE = 16, 4, 16  # latent channels, latent frames, latent side (8x8 tokens at patch 2)
COLOURS = {"red": (0.9, 0.1, 0.1), "green": (0.1, 0.85, 0.15), "blue": (0.1, 0.2, 0.95), "yellow": (0.95, 0.9, 0.1)}
SHAPES = ("square", "disk", "cross")
MOTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}  # (rows, columns) per frame
BACKGROUNDS = ("sand", "stone", "grass", "night")
OBJECT_SIDE, STEP = 6, 2  # the object's box in latent pixels; its move per latent frame


def _encoder() -> torch.Tensor:
    """RGB (centred at 0.5) -> 16 channels: a fixed random map of unit columns, plus a bias."""
    g = torch.Generator().manual_seed(1234)
    w = torch.randn(CHANNELS, 3, generator=g)
    return w / w.norm(dim=0, keepdim=True) * 5.0  # the model-space latent (process_in) at about unit scale


ENCODE = _encoder()              # [16, 3]
DECODE = torch.linalg.pinv(ENCODE)  # [3, 16]


def encode(rgb: torch.Tensor) -> torch.Tensor:
    """``[..., 3, T, H, W]`` in 0..1 -> latent ``[..., 16, T, H, W]``."""
    return torch.einsum("cd,...dthw->...cthw", ENCODE, rgb - 0.5)


def decode(latent: torch.Tensor) -> torch.Tensor:
    """Latent ``[..., 16, T, H, W]`` -> RGB ``[..., 3, T, H, W]`` (not clamped)."""
    return torch.einsum("dc,...cthw->...dthw", DECODE, latent) + 0.5


@dataclass(frozen=True)
class Clip:
    colour: str
    shape: str
    motion: str
    background: str
    rows: tuple[int, ...]  # the object's box, top row per frame
    cols: tuple[int, ...]  # and left column per frame

    @property
    def caption(self) -> str:
        return caption(self.colour, self.shape, self.motion, self.background)


def caption(colour: str, shape: str, motion: str, background: str) -> str:
    return f"a {colour} {shape} moving {motion} on {background}"


def all_captions() -> list[str]:
    return [caption(c, s, m, b) for c in COLOURS for s in SHAPES for m in MOTIONS for b in BACKGROUNDS]


def shape_mask(shape: str) -> torch.Tensor:
    """The shape inside its ``OBJECT_SIDE`` box: ``[side, side]`` bool."""
    n = OBJECT_SIDE
    y, x = torch.meshgrid(torch.arange(n) - (n - 1) / 2, torch.arange(n) - (n - 1) / 2, indexing="ij")
    if shape == "square":
        return torch.ones(n, n, dtype=torch.bool)
    if shape == "disk":
        return x ** 2 + y ** 2 <= (n / 2) ** 2 - 0.5
    return (x.abs() < 1.1) | (y.abs() < 1.1)  # cross, two pixels thick


def background(kind: str, g: torch.Generator) -> torch.Tensor:
    """RGB ``[3, T, H, W]``: a texture of ``kind`` with this clip's phase, scale and brightness.
    Textures are still; only the object moves."""
    y, x = torch.meshgrid(torch.arange(SIZE).float(), torch.arange(SIZE).float(), indexing="ij")
    phase = float(torch.rand((), generator=g)) * 2 * math.pi
    freq = 0.5 + 0.5 * float(torch.rand((), generator=g))
    noise = torch.rand(SIZE, SIZE, generator=g) - 0.5
    if kind == "sand":
        base, pattern = (0.62, 0.55, 0.38), 0.06 * torch.sin(freq * x + phase) + 0.1 * noise
    elif kind == "stone":
        base, pattern = (0.45, 0.45, 0.47), 0.12 * noise + 0.05 * torch.sin(freq * (x + y) + phase)
    elif kind == "grass":
        base, pattern = (0.25, 0.42, 0.22), 0.08 * torch.sin(2 * freq * x + phase) + 0.06 * noise
    else:  # night
        base, pattern = (0.12, 0.14, 0.3), 0.05 * torch.sin(freq * y + phase) + 0.05 * noise
    bright = 0.9 + 0.2 * float(torch.rand((), generator=g))
    rgb = torch.stack([(b + pattern) * bright for b in base])
    return rgb[:, None].expand(3, FRAMES, SIZE, SIZE).clamp(0, 1)


def random_clip(g: torch.Generator, colour: str | None = None, shape: str | None = None, motion: str | None = None,
                bg: str | None = None) -> Clip:
    pick = lambda options: options[int(torch.randint(len(options), (), generator=g))]
    colour, shape = colour or pick(list(COLOURS)), shape or pick(SHAPES)
    motion, bg = motion or pick(list(MOTIONS)), bg or pick(BACKGROUNDS)
    dy, dx = MOTIONS[motion]
    travel = STEP * (FRAMES - 1)
    span = SIZE - OBJECT_SIDE  # top-left positions that keep the box inside
    lo_r, hi_r = (travel if dy < 0 else 0), span - (travel if dy > 0 else 0)
    lo_c, hi_c = (travel if dx < 0 else 0), span - (travel if dx > 0 else 0)
    r0 = int(torch.randint(lo_r, hi_r + 1, (), generator=g))
    c0 = int(torch.randint(lo_c, hi_c + 1, (), generator=g))
    return Clip(colour, shape, motion, bg, tuple(r0 + dy * STEP * t for t in range(FRAMES)),
                tuple(c0 + dx * STEP * t for t in range(FRAMES)))


def masks(clip: Clip) -> torch.Tensor:
    """The object's true mask in every latent frame: ``[T, H, W]`` bool."""
    out = torch.zeros(FRAMES, SIZE, SIZE, dtype=torch.bool)
    m = shape_mask(clip.shape)
    for t, (r, c) in enumerate(zip(clip.rows, clip.cols)):
        out[t, r:r + OBJECT_SIDE, c:c + OBJECT_SIDE] = m
    return out


def render(clip: Clip, g: torch.Generator) -> torch.Tensor:
    """The clip's latent ``[16, T, H, W]`` (its background drawn with ``g``)."""
    rgb = background(clip.background, g)
    jitter = 0.06 * (torch.rand(3, generator=g) - 0.5)
    colour = (torch.tensor(COLOURS[clip.colour]) + jitter).clamp(0, 1)
    m = masks(clip)
    rgb = torch.where(m[None], colour.view(3, 1, 1, 1), rgb)
    return encode(rgb)


def sample(seed: int) -> tuple[Clip, torch.Tensor]:
    """Clip ``seed`` of the world: its truth and its latent."""
    g = torch.Generator().manual_seed(seed)
    clip = random_clip(g)
    return clip, render(clip, g)


# -- reading a latent back -----------------------------------------------------------------------
def object_pixels(latent: torch.Tensor, threshold: float = 0.35) -> torch.Tensor:
    """``[T, H, W]`` bool: pixels whose colour is saturated (the object's palette; backgrounds
    are dull). ``latent`` ``[16, T, H, W]``."""
    rgb = decode(latent).clamp(0, 1)
    return (rgb.amax(0) - rgb.amin(0)) > threshold


def nearest_colour(rgb: torch.Tensor) -> str:
    """The palette colour nearest to a mean RGB ``[3]``."""
    names = list(COLOURS)
    d = torch.stack([(rgb - torch.tensor(COLOURS[n])).norm() for n in names])
    return names[int(d.argmin())]


def colour_inside(latent: torch.Tensor, mask: torch.Tensor) -> str:
    """The palette colour of the mean RGB inside ``mask`` ``[T, H, W]``."""
    rgb = decode(latent).clamp(0, 1)
    return nearest_colour(rgb[:, mask].mean(1))


def centroids(mask: torch.Tensor) -> torch.Tensor:
    """Per frame the (row, column) centre of ``mask`` ``[T, H, W]``; NaN where a frame is empty."""
    y, x = torch.meshgrid(torch.arange(SIZE).float(), torch.arange(SIZE).float(), indexing="ij")
    n = mask.sum((1, 2)).float()
    cy = (mask * y).sum((1, 2)) / n
    cx = (mask * x).sum((1, 2)) / n
    return torch.stack([cy, cx], 1)


def psnr_outside(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    """PSNR (RGB 0..1) between two latents' pictures outside ``mask`` ``[T, H, W]``."""
    ra, rb = decode(a).clamp(0, 1), decode(b).clamp(0, 1)
    mse = float(((ra - rb) ** 2)[:, ~mask].mean())
    return 10 * math.log10(1.0 / max(mse, 1e-10))
