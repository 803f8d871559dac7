"""Frame loading for FateZero: video files (through PyAV), animated WebP (through Pillow)
and folders of numbered images.

Plain PyAV / Pillow / numpy / torch, no ComfyUI imports, so it can be used (and tested) anywhere.
Every problem a user can fix is raised as :class:`ClipError`, naming the input to change;
PyAV and PIL exceptions never escape raw.
"""
from __future__ import annotations

import logging
import math
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal

import av
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .clip_files import ClipError, folder_images, webp_frame_durations

log = logging.getLogger(__name__)

# Decoded with Pillow only: the FFmpeg in ComfyUI's PyAV (av 18.1) reads still WebP images
# but fails on animated ones ("Invalid data found when processing input"; tests/test_video.py
# checks it), and animated WebP is what ComfyUI's SaveAnimatedWEBP writes.
PILLOW_EXTENSIONS = (".webp",)
# Decoded with PyAV first: it is core LoadVideo's decoder (same pixels, bit for bit), it is
# threaded, and it reads the truncated GIFs Pillow refuses. Pillow only when FFmpeg rejects
# the file, e.g. a GIF whose header gives a 0 logical screen size, which Pillow reads.
PILLOW_FALLBACK_EXTENSIONS = (".gif",)
PILLOW_ERRORS = (OSError, ValueError, EOFError, SyntaxError, Image.DecompressionBombError)
RESIZE_MODES = ("center crop", "stretch")
ResizeMode = Literal["center crop", "stretch"]
# An image folder carries no timing; FateZero's own sample clips are played at 8 fps.
FOLDER_FPS = 8.0
# Decoder working set on top of the IMAGE batch: a few reference / threaded frames at
# source size in YUV + the RGB conversion. Generous on purpose: it only gates refusal.
DECODE_FRAMES = 16


@dataclass(frozen=True)
class ClipInfo:
    n_frames: int  # exact for folders and Pillow clips; container metadata (or packet count) for videos
    fps: float
    width: int
    height: int


# -- reading ---------------------------------------------------------------------------------
class Undecodable(ClipError):
    """The decoder rejected the file (not a setting the user chose); ``why`` says which and how."""

    def __init__(self, name: str, why: str, pillow: bool):
        self.why = why
        if pillow:  # ffmpeg cannot read these files either, so re-encoding with it is no way out
            fix = "save it again from the program that made it, or its frames as png files in an image folder"
        else:
            fix = "re-export or re-encode the clip (e.g. `ffmpeg -i in.mp4 out.mp4`)"
        super().__init__("video", f"'{name}' cannot be decoded; it is corrupt, truncated or not a video "
                                  f"({why})", f"{fix}, or pick another file")


def _unreadable(name: str, err: Exception | str, pillow: bool = False) -> Undecodable:
    return Undecodable(name, f"{'Pillow' if pillow else 'PyAV'}: {err}", pillow)


def _decode_errors(pillow: bool) -> tuple[type[Exception], ...]:
    return PILLOW_ERRORS if pillow else (av.FFmpegError,)


def _pillow_probe(path: Path) -> ClipInfo:
    with Image.open(path) as img:
        n = getattr(img, "n_frames", 1)
        if img.format == "WEBP":
            durations = webp_frame_durations(path)
        else:  # GIF (the fallback only): Pillow decodes each frame on the way to its duration
            durations = []
            for i in range(n):
                img.seek(i)
                durations.append(img.info.get("duration") or 0)
        w, h = img.size
    total_ms = sum(durations)
    # The mean rate over the file; a still image (or one without timing) gets the folder rate.
    fps = len(durations) * 1000 / total_ms if total_ms else FOLDER_FPS
    return ClipInfo(n, fps, w, h)


def probe(path: Path, pillow: bool = False) -> ClipInfo:
    """Frame count, rate and size from headers only (nothing is decoded), except for a GIF read
    with Pillow, whose frame durations Pillow gives only by seeking through the frames."""
    if path.is_dir():
        files = folder_images(path)
        w, h = _open_image(files[0]).size
        return ClipInfo(len(files), FOLDER_FPS, w, h)
    try:
        if pillow:
            return _pillow_probe(path)
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise ClipError("video", f"'{path.name}' has no video stream", "pick a file with video in it")
            s = c.streams.video[0]
            fps = float(s.average_rate or s.guessed_rate or s.base_rate or 0) or FOLDER_FPS
            n = s.frames
            if not n and s.duration and s.time_base:
                n = round(float(s.duration * s.time_base) * fps)
            if not n and c.duration:
                n = round(c.duration / av.time_base * fps)
            if not n:  # webm/avi without counts: packets ~ frames, and demuxing decodes nothing
                n = sum(1 for p in c.demux(s) if p.size)
            return ClipInfo(int(n), fps, s.codec_context.width, s.codec_context.height)
    except ClipError:
        raise
    except _decode_errors(pillow) as e:
        raise _unreadable(path.name, e, pillow) from None


def _open_image(path: Path):
    try:
        img = Image.open(path)
        img.load()
        return img
    except (UnidentifiedImageError, OSError) as e:
        raise ClipError("video", f"frame '{path.name}' in folder '{path.parent.name}' cannot be read ({e})",
                        "replace or delete that image") from None


FrameSource = Iterator[tuple[int, Callable[[], av.VideoFrame]]]


def _rgb_frame(img: Image.Image) -> av.VideoFrame:
    # convert("RGB") drops alpha (as ComfyUI's LoadImage does for the IMAGE) and expands palettes.
    return av.VideoFrame.from_ndarray(np.asarray(img.convert("RGB")), format="rgb24")


def _frames(path: Path, pillow: bool = False) -> FrameSource:
    """(index, loader) for every frame in order; the loader does the costly part, so
    skipped frames of an image folder are never opened (and those of a WebP only decoded
    as far as the next kept frame needs). Call each loader before taking the next frame."""
    if path.is_dir():
        for i, f in enumerate(folder_images(path)):
            yield i, lambda f=f: _rgb_frame(_open_image(f))
        return
    if pillow:
        with Image.open(path) as img:
            for i in range(getattr(img, "n_frames", 1)):
                img.seek(i)  # frames are composited onto the canvas, as a browser shows them
                yield i, lambda: _rgb_frame(img)
        return
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"  # frame+slice threads: decoding dominates the load time
        for i, frame in enumerate(c.decode(s)):
            yield i, lambda frame=frame: frame


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
        with closing(_frames(path, pillow)) as frames:  # closing(): breaking early closes the file
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
    except _decode_errors(pillow) as e:
        raise _unreadable(path.name, e, pillow) from None

    if got == 0:
        if seen == 0:
            raise _unreadable(path.name, "no frame could be decoded", pillow)
        raise ClipError("start_frame", f"{start_frame} is past the end of '{path.name}', which has {seen} frames",
                        f"use a start_frame below {seen}")
    if frame_count and got < frame_count:
        log.warning("FateZero: '%s' has only %d frames from start_frame %d every %d; returning %d of the "
                    "%d requested", path.name, seen, start_frame, every_nth, got, frame_count)
    # A view, not a copy: the spare rows (if the metadata overcounted) are few.
    images = torch.cat([out[:got], *extra]) if extra else out[:got]
    return images, info.fps / every_nth
