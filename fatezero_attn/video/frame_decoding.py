"""Decoding clips: video files (through PyAV), animated WebP (through Pillow) and folders of
numbered images; the header probe and the frame source ``video_io.py`` reads from.

Plain PyAV / Pillow / numpy, no ComfyUI imports. Every problem a user can fix is raised as
:class:`ClipError`, naming the input to change; PyAV and PIL exceptions never escape raw.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import av
import numpy as np
from PIL import Image, UnidentifiedImageError

from .video_files import ClipError, folder_images, webp_frame_durations

# Decoded with Pillow only: the FFmpeg in ComfyUI's PyAV (av 18.1) reads still WebP images
# but fails on animated ones ("Invalid data found when processing input"; tests/test_video.py
# checks it), and animated WebP is what ComfyUI's SaveAnimatedWEBP writes.
PILLOW_EXTENSIONS = (".webp",)
# Decoded with PyAV first: it is core LoadVideo's decoder (same pixels, bit for bit), it is
# threaded, and it reads the truncated GIFs Pillow refuses. Pillow only when FFmpeg rejects
# the file, e.g. a GIF whose header gives a 0 logical screen size, which Pillow reads.
PILLOW_FALLBACK_EXTENSIONS = (".gif",)
PILLOW_ERRORS = (OSError, ValueError, EOFError, SyntaxError, Image.DecompressionBombError)
# An image folder carries no timing; FateZero's own sample clips are played at 8 fps.
FOLDER_FPS = 8.0


@dataclass(frozen=True)
class ClipInfo:
    n_frames: int  # exact for folders and Pillow clips; container metadata (or packet count) for videos
    fps: float
    width: int
    height: int


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


def unreadable(name: str, err: Exception | str, pillow: bool = False) -> Undecodable:
    return Undecodable(name, f"{'Pillow' if pillow else 'PyAV'}: {err}", pillow)


def decode_errors(pillow: bool) -> tuple[type[Exception], ...]:
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
    except decode_errors(pillow) as e:
        raise unreadable(path.name, e, pillow) from None


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


def frames(path: Path, pillow: bool = False) -> FrameSource:
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
