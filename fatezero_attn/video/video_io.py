"""Frame loading for FateZero: a clip (``frame_decoding.py``) -> the IMAGE frames a node asks
for (selected, resized, within the memory the machine has).

Plain PyAV / Pillow / numpy / torch, no ComfyUI imports, so it can be used (and tested) anywhere.
Every problem a user can fix is raised as :class:`ClipError`, naming the input to change.
"""
from __future__ import annotations

import logging
import math
from contextlib import closing
from pathlib import Path
from typing import Literal

import av
import numpy as np
import torch

from . import frame_decoding
from .frame_decoding import PILLOW_EXTENSIONS, PILLOW_FALLBACK_EXTENSIONS, Undecodable, decode_errors, probe, unreadable
from .video_files import ClipError

log = logging.getLogger(__name__)

RESIZE_MODES = ("center crop", "stretch")
ResizeMode = Literal["center crop", "stretch"]
# Decoder working set on top of the IMAGE batch: a few reference / threaded frames at
# source size in YUV + the RGB conversion. Generous on purpose: it only gates refusal.
DECODE_FRAMES = 16


def fit_frame(frame: av.VideoFrame, width: int, height: int, mode: ResizeMode) -> np.ndarray:
    """RGB uint8 [height, width, 3]: stretched, or scaled to cover and center cropped."""
    sw, sh = frame.width, frame.height
    if mode == "stretch":
        tw, th = width, height
    else:
        s = max(width / sw, height / sh)
        tw, th = max(width, round(sw * s)), max(height, round(sh * s))
    if (tw, th) == (sw, sh):  # same conversion as ComfyUI's LoadVideo, bit for bit
        rgb = frame.to_ndarray(format="rgb24")
    else:  # swscale filters properly when shrinking (no aliasing), in one pass
        rgb = frame.reformat(width=tw, height=th, format="rgb24", interpolation="BICUBIC").to_ndarray()
    x, y = (tw - width) // 2, (th - height) // 2
    return rgb[y:y + height, x:x + width]


def check_settings(frame_count: int, start_frame: int, every_nth: int, width: int, height: int,
                   resize: str) -> None:
    for name, value, low in (("frame_count", frame_count, 0), ("start_frame", start_frame, 0),
                             ("every_nth", every_nth, 1), ("width", width, 64), ("height", height, 64)):
        if value < low:
            raise ClipError(name, f"{value} is below the minimum {low}", f"use {low} or more")
    for name, value in (("width", width), ("height", height)):
        if value % 8:  # the VAE downsamples by 8; other sizes would be cropped silently later
            lo, hi = value // 8 * 8, value // 8 * 8 + 8
            near = f"{hi}" if lo < 64 else f"{lo} or {hi}"
            raise ClipError(name, f"{value} is not a multiple of 8", f"use {near}")
    if resize not in RESIZE_MODES:
        raise ClipError("resize", f"unknown mode '{resize}'", f"use one of {', '.join(RESIZE_MODES)}")


def estimate_bytes(n_frames: int, width: int, height: int, src_width: int, src_height: int) -> int:
    return n_frames * height * width * 3 * 4 + DECODE_FRAMES * src_width * src_height * 4


def load_clip(path: Path, frame_count: int = 8, start_frame: int = 0, every_nth: int = 1,
              width: int = 512, height: int = 512, resize: ResizeMode = "center crop",
              available_bytes: int | None = None) -> tuple[torch.Tensor, float]:
    """Frames start_frame, start_frame+every_nth, ... (at most frame_count, 0 = all) as a
    ComfyUI IMAGE [N, height, width, 3] float32 in 0..1, and the rate to play them at
    (the source rate / every_nth, so the clip keeps its real-time speed). An animated WebP's
    or GIF's rate is the mean of its frame durations.

    Decoding stops as soon as enough frames are read. If the clip has fewer frames than
    requested, the ones it has are returned and a warning is logged."""
    check_settings(frame_count, start_frame, every_nth, width, height, resize)
    args = (path, frame_count, start_frame, every_nth, width, height, resize, available_bytes)
    suffix = path.suffix.lower()
    if path.is_dir() or suffix not in PILLOW_FALLBACK_EXTENSIONS:
        return _load(*args, pillow=suffix in PILLOW_EXTENSIONS)
    try:
        return _load(*args, pillow=False)
    except Undecodable as av_error:
        log.info("FateZero: PyAV cannot decode '%s' (%s); reading it with Pillow", path.name, av_error.why)
        try:
            return _load(*args, pillow=True)
        except Undecodable as pil_error:
            raise Undecodable(path.name, f"{av_error.why}; {pil_error.why}", pillow=True) from None


def _load(path: Path, frame_count: int, start_frame: int, every_nth: int, width: int, height: int,
          resize: ResizeMode, available_bytes: int | None, pillow: bool) -> tuple[torch.Tensor, float]:
    info = probe(path, pillow)
    avail = max(0, math.ceil((info.n_frames - start_frame) / every_nth))
    n = min(frame_count, avail) if frame_count else avail
    # Refuse before allocating anything: a too-large batch would get the process killed.
    need = estimate_bytes(n, width, height, info.width, info.height)
    if available_bytes is None:
        import psutil
        available_bytes = psutil.virtual_memory().available
    if need > available_bytes:
        gb = 1024 ** 3
        raise ClipError("frame_count", f"{n} frames at {width}x{height} need about {need / gb:.1f} GB of RAM "
                        f"but only {available_bytes / gb:.1f} GB is available",
                        "lower frame_count, width or height, or raise every_nth")

    out = torch.empty((max(n, 1), height, width, 3), dtype=torch.float32)
    extra: list[torch.Tensor] = []  # only if the metadata undercounted the frames
    got, seen = 0, 0
    try:
        with closing(frame_decoding.frames(path, pillow)) as frames:  # closing(): breaking early closes the file
            for i, load in frames:
                seen = i + 1
                if i < start_frame or (i - start_frame) % every_nth:
                    continue
                rgb = torch.from_numpy(fit_frame(load(), width, height, resize))
                if got < out.shape[0]:
                    out[got].copy_(rgb).div_(255.0)
                else:
                    extra.append(rgb.to(torch.float32).div_(255.0)[None])
                got += 1
                if got == frame_count:
                    break
    except ClipError:
        raise
    except decode_errors(pillow) as e:
        raise unreadable(path.name, e, pillow) from None

    if got == 0:
        if seen == 0:
            raise unreadable(path.name, "no frame could be decoded", pillow)
        raise ClipError("start_frame", f"{start_frame} is past the end of '{path.name}', which has {seen} frames",
                        f"use a start_frame below {seen}")
    if frame_count and got < frame_count:
        log.warning("FateZero: '%s' has only %d frames from start_frame %d every %d; returning %d of the "
                    "%d requested", path.name, seen, start_frame, every_nth, got, frame_count)
    # A view, not a copy: the spare rows (if the metadata overcounted) are few.
    images = torch.cat([out[:got], *extra]) if extra else out[:got]
    return images, info.fps / every_nth
