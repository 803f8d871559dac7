"""Attention preview: the source cross-attention of prompt words as heat maps over the frames.

Plain tensors in and out. A word's heat map is the store's blend-level cross-attention at the
word's token positions, summed over its tokens and averaged over the chosen inversion calls,
*without* the blend mask's 3x3 max-pool (the heat shows where the word attends; the pool only
widens it by one attention cell), resampled bilinearly to the tile and divided by each frame's
peak (0..1, as the blend mask normalises). The blend mask panel uses the Blend Mask node's own
mask, ``threshold_mask(word_maps(...))``, so the outline is exactly where the edit keeps its own
self-attention. The sheet: one row per word and a last row for the mask, one column per frame,
at most ``COLUMNS`` frames per page (an image of the output batch).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from .. import defaults
from ..edit.masks import threshold_mask, word_maps
from ..edit.schedule import inversion_call, replace_step_counts
from ..video import windows

# an inferno-like ramp: black, purple, red, orange, pale yellow (0 -> 1)
STOPS = torch.tensor([[0.00, 0.00, 0.02], [0.34, 0.06, 0.43], [0.74, 0.22, 0.33],
                      [0.98, 0.56, 0.04], [0.99, 1.00, 0.64]])
HEAT_ALPHA = 0.65   # heat over the frame
OUTSIDE = 0.35      # mask panel: brightness of the frame outside the mask
OUTLINE = (0.0, 1.0, 1.0)  # mask panel: the outline colour (cyan, absent from the dimmed frames)
TILE, COLUMNS, GAP, HEADER = 256, 8, 4, 26  # tile's longer side, frames per page, gap and header pixels
BACKGROUND, TEXT = 0.12, 0.92
DEFAULT_FRACTION = defaults.SELF_REPLACE_STEPS  # the fusion's default replace fraction


def colormap(v: torch.Tensor) -> torch.Tensor:
    """Values 0..1 ``[...]`` -> RGB ``[..., 3]``, linear between the evenly spaced ``STOPS``."""
    x, a = np.linspace(0.0, 1.0, len(STOPS)), v.detach().cpu().numpy()
    out = np.empty((*a.shape, 3), np.float32)
    for c in range(3):
        out[..., c] = np.interp(a, x, STOPS[:, c].numpy())
    return torch.from_numpy(out)


def edit_calls(steps: int, step: int, fraction: float = DEFAULT_FRACTION) -> list[int]:
    """Inversion calls ``j`` shown: edit step ``k`` reads call ``steps - 1 - k``; ``step`` -1 means
    every edit step the self-attention (and so the blend mask) is fused at ``fraction``."""
    ks = [step] if step >= 0 else range(max(1, replace_step_counts(steps, fraction, fraction)[1]))
    return [inversion_call(steps, k) for k in ks]


def video_rows(info) -> list[int]:
    """For each video frame, its frame of the maps of a store (``StoreInfo``), as the Blend Mask
    preview maps them: a video model's latent frames cover several video frames (Wan's 4n+1); a
    windowed SD store's rows hold its sub-videos."""
    if info.latent_frames:
        return info.family.video_frame_latents(info.latent_frames)
    if info.window:
        return windows.clip_rows(windows.sub_videos(info.frames, info.window, info.temporal_mode))
    return list(range(info.frames))


def map_frame_sources(info) -> list[list[int]]:
    """For each frame of the maps of a store (``StoreInfo``), the video frames it holds: the inverse
    of ``video_rows``, with a windowed store's every row (the anchor frame's copies too)."""
    if info.window and not info.latent_frames:
        return [[f] for sub in windows.sub_videos(info.frames, info.window, info.temporal_mode) for f in sub.frames]
    rows = video_rows(info)
    sources = [[] for _ in range(max(rows) + 1)]
    for frame, row in enumerate(rows):
        sources[row].append(frame)
    return sources


def video_size(info) -> tuple[int, int]:
    """``(H, W)`` in pixels of the video a store (``StoreInfo``) was inverted from: its latent grid
    times the family's VAE scale."""
    scale = info.family.vae_scale
    return info.latent_hw[0] * scale, info.latent_hw[1] * scale


def pick_frames(count: int, max_frames: int) -> list[int]:
    """``max_frames`` evenly spaced frames of ``count``, first and last included (0: all)."""
    if max_frames <= 0 or max_frames >= count:
        return list(range(count))
    return torch.linspace(0, count - 1, max_frames).round().long().tolist()


def tile_size(hw: tuple[int, int], long_side: int = TILE) -> tuple[int, int]:
    """A frame's size scaled so its longer side is ``long_side`` (aspect kept)."""
    s = long_side / max(hw)
    return max(8, round(hw[0] * s)), max(8, round(hw[1] * s))


def select(cross_maps: torch.Tensor, calls: list[int], rows: list[int]) -> torch.Tensor:
    """The store's maps of the chosen inversion calls and frames ``[calls, frames, h, w, tokens]``."""
    return cross_maps[calls][:, rows].float()


def word_heat(mean_maps: torch.Tensor, positions: list[int], size: tuple[int, int]) -> torch.Tensor:
    """``[frames, H, W]`` 0..1 from the calls' mean maps ``[frames, h, w, tokens]``: the word's
    token maps summed, resized bilinearly to ``size``, over each frame's peak."""
    m = F.interpolate(mean_maps[..., positions].sum(-1)[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return m / m.amax(dim=(1, 2), keepdim=True).clamp_min(torch.finfo(m.dtype).tiny)


def attention_share(mean_maps: torch.Tensor, positions: list[int]) -> float:
    """The share of the frames' cross-attention the word receives (mean over pixels and frames)."""
    return float(mean_maps[..., positions].sum(-1).mean())


def blend_mask(maps: torch.Tensor, positions: list[int], size: tuple[int, int], tau: float) -> torch.Tensor:
    """The Blend Mask node's mask ``[frames, H, W]`` at ``size`` from ``select``'s maps: of one
    call, or over several calls the pixels in the mask at at least half of them. Made on the
    maps' grid and resized nearest: ``threshold_mask`` at ``size`` when ``size`` is no smaller."""
    pooled = word_maps(maps, positions)
    grid = tuple(pooled.shape[-2:])
    grid = size if size[0] < grid[0] or size[1] < grid[1] else grid
    share = torch.stack([threshold_mask(p, grid, tau).float() for p in pooled]).mean(0)
    return F.interpolate((share >= 0.5).float()[:, None], size=size, mode="nearest")[:, 0] > 0


def outline(mask: torch.Tensor, width: int = 2) -> torch.Tensor:
    """Mask pixels within ``width`` pixels (8-neighbourhood) of a pixel outside it; beyond the
    frame counts as outside, so the outline is closed."""
    out = F.pad((~mask).float()[:, None], [width] * 4, value=1.0)
    near = F.max_pool2d(out, 2 * width + 1, stride=1)[:, 0] > 0
    return mask & near


def frame_tiles(images: torch.Tensor | None, frames: list[int], size: tuple[int, int]) -> torch.Tensor:
    """The chosen frames ``[n, H, W, 3]`` at tile size, or mid gray without images."""
    if images is None:
        return torch.full((len(frames), *size, 3), 0.5)
    x = images[frames][..., :3].float().cpu().permute(0, 3, 1, 2)
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1).permute(0, 2, 3, 1)


def grayscale(frames: torch.Tensor) -> torch.Tensor:
    """``[..., 3]`` -> luma ``[..., 1]``: heat is drawn over the frames in gray, so their colours do not read as heat."""
    return (frames * torch.tensor([0.299, 0.587, 0.114])).sum(-1, keepdim=True)


def heat_tiles(gray: torch.Tensor, heat: torch.Tensor) -> torch.Tensor:
    return colormap(heat).mul_(HEAT_ALPHA).add_((1 - HEAT_ALPHA) * gray)


def mask_tiles(frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    out = frames * torch.where(mask, 1.0, OUTSIDE)[..., None]
    return torch.where(outline(mask)[..., None], torch.tensor(OUTLINE), out)


@dataclass
class Row:
    title: str
    subtitle: str
    tiles: torch.Tensor  # [frames, H, W, 3]


@lru_cache(maxsize=None)
def _font(size: int):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable font
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _fit(draw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


@dataclass
class Layout:
    """Where things are on a page: a label column, a header line, tiles in rows and columns."""
    tile: tuple[int, int]
    label_width: int
    header: int = HEADER
    columns: int = COLUMNS

    def origin(self, row: int, col: int) -> tuple[int, int]:
        """Top-left (y, x) of the tile of ``row`` (0 = first word) and page column ``col``."""
        return self.header + row * (self.tile[0] + GAP), self.label_width + col * (self.tile[1] + GAP)

    def page_size(self, rows: int) -> tuple[int, int]:
        return self.origin(rows, self.columns)[0], self.origin(rows, self.columns)[1]


def layout(rows: list[Row], tile: tuple[int, int], frames: int) -> Layout:
    from PIL import Image, ImageDraw
    draw = ImageDraw.Draw(Image.new("L", (1, 1)))
    need = max(max(draw.textlength(r.title, font=_font(18)), draw.textlength(r.subtitle, font=_font(13))) for r in rows)
    return Layout(tile, int(min(max(need + 16, 120), 300)), columns=min(COLUMNS, frames))


def _text(hw: tuple[int, int], items: list) -> torch.Tensor:
    """Coverage ``[h, w, 1]`` 0..1 of ``(x, y, text, font size, width)`` items drawn (cut to width)."""
    from PIL import Image, ImageDraw
    image = Image.new("L", (hw[1], hw[0]))
    draw = ImageDraw.Draw(image)
    for x, y, text, size, width in items:
        draw.text((x, y), _fit(draw, text, _font(size), width), fill=255, font=_font(size))
    return torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(*hw, 1).float() / 255


def _paint(region: torch.Tensor, alpha: torch.Tensor) -> None:
    region.mul_(1 - alpha).add_(TEXT * alpha)


def sheet(rows: list[Row], frame_ids: list[int], corner: str) -> tuple[torch.Tensor, Layout]:
    """Pages ``[pages, H, W, 3]``: a row per ``Row`` (its title and subtitle in the label column),
    a column per frame (``frame n`` above it), ``COLUMNS`` frames per page; text only outside tiles."""
    lay = layout(rows, tuple(rows[0].tiles.shape[1:3]), len(frame_ids))
    (th, tw), (ph, pw), top, left = lay.tile, lay.page_size(len(rows)), lay.header, lay.label_width
    n = lay.columns
    out = torch.full((-(-len(frame_ids) // n), ph, pw, 3), BACKGROUND)
    labels = _text((ph - top, left), [item for r, row in enumerate(rows) for item in (
        (6, r * (th + GAP) + 4, row.title, 18, left - 10), (6, r * (th + GAP) + 28, row.subtitle, 13, left - 10))])
    for p, page in enumerate(out):
        ids = frame_ids[p * n:(p + 1) * n]
        grid = torch.stack([row.tiles[p * n:p * n + len(ids)] for row in rows])  # [rows, frames, th, tw, 3]
        grid = F.pad(grid, (0, 0, 0, GAP, 0, GAP), value=BACKGROUND).permute(0, 2, 1, 3, 4)
        page[top:, left:left + len(ids) * (tw + GAP)] = grid.reshape(len(rows) * (th + GAP), -1, 3)
        _paint(page[:top], _text((top, pw), [(6, 6, corner, 13, left - 10)] + [
            (lay.origin(0, c)[1] + 2, 6, f"frame {f}", 13, tw - 4) for c, f in enumerate(ids)]))
        _paint(page[top:, :left], labels)
    return out, lay
