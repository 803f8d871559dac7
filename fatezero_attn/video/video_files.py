"""The clips a user can pick: video files, animated WebPs and folders of numbered images
inside ComfyUI's input folder, found, resolved (never outside that folder) and fingerprinted
for ComfyUI's cache. No decoding here (``video_io.py``)."""
from __future__ import annotations

import os
import re
from pathlib import Path

VIDEO_EXTENSIONS = (".mp4", ".webm", ".gif", ".webp", ".mov", ".avi", ".mkv", ".m4v")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


class ClipError(ValueError):
    """A bad input the user can fix: which input, what is wrong, and what to do."""

    def __init__(self, input_name: str, problem: str, fix: str):
        self.input_name, self.problem, self.fix = input_name, problem, fix
        super().__init__(f"input '{input_name}': {problem}. Fix: {fix}.")



def _natural_key(name: str) -> list:
    # "frame10.png" after "frame9.png": users number frames without zero padding.
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def folder_images(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
                  key=lambda p: _natural_key(p.name))


def is_animated_webp(path: Path) -> bool:
    """From the first 21 bytes: a RIFF/WEBP file whose VP8X chunk sets the animation flag."""
    try:
        with open(path, "rb") as f:
            head = f.read(21)
    except OSError:
        return False
    return (len(head) == 21 and head[:4] == b"RIFF" and head[8:16] == b"WEBPVP8X"
            and bool(head[20] & 0x02))


def webp_frame_durations(path: Path) -> list[int]:
    """Display time (ms) of each frame of an animated WebP, from the ANMF chunk headers of its
    RIFF container (nothing is decoded; Pillow reports a duration only for a decoded frame).
    Empty for a still WebP."""
    durations = []
    with open(path, "rb") as f:
        f.seek(12)  # "RIFF", file size, "WEBP"
        while len(head := f.read(8)) == 8:
            size = int.from_bytes(head[4:], "little")
            skip = size + (size & 1)  # chunks are padded to an even size
            if head[:4] == b"ANMF":  # x, y, width-1, height-1 (24 bits each), duration (24 bits), flags
                frame_head = f.read(16)
                if len(frame_head) < 16:
                    break
                durations.append(int.from_bytes(frame_head[12:15], "little"))
                skip -= 16
            f.seek(skip, os.SEEK_CUR)
    return durations


def _is_clip_file(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix == ".webp":  # still WebPs in the input folder are usually images for Load Image
        return is_animated_webp(path)
    return suffix in VIDEO_EXTENSIONS


def list_clips(input_dir: str | os.PathLike) -> list[str]:
    """Video files, animated WebPs and image folders directly inside ``input_dir`` (for the
    node's combo)."""
    root = Path(input_dir)
    if not root.is_dir():
        return []
    names = []
    for entry in root.iterdir():
        if entry.is_file() and _is_clip_file(entry):
            names.append(entry.name)
        elif entry.is_dir() and not entry.name.startswith(".") and folder_images(entry):
            names.append(entry.name)
    return sorted(names, key=_natural_key)


def resolve_clip(input_dir: str | os.PathLike, name: str) -> Path:
    """The clip ``name`` inside ``input_dir``; refuses anything that leaves that folder."""
    if name.endswith(" [input]"):  # ComfyUI's annotated form of an input-folder file
        name = name[: -len(" [input]")]
    where = f"ComfyUI's input folder ({input_dir})"
    pick = "pick a file or image folder from the list, or upload one"
    if not name or os.path.isabs(name):
        raise ClipError("video", f"'{name}' is not a name inside {where}; absolute paths are refused", pick)
    root = os.path.realpath(input_dir)
    path = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([root, path]) != root:
        raise ClipError("video", f"'{name}' points outside {where}", pick)
    if not os.path.exists(path):
        raise ClipError("video", f"'{name}' was not found in {where}", f"copy the clip there or {pick}")
    p = Path(path)
    if p.is_dir():
        if not folder_images(p):
            raise ClipError("video", f"the folder '{name}' holds no {'/'.join(IMAGE_EXTENSIONS)} frames",
                            "put the frames (sorted by name) in it, or pick a video file")
    elif p.suffix.lower() not in VIDEO_EXTENSIONS:
        raise ClipError("video", f"'{name}' is not a supported video type ({', '.join(VIDEO_EXTENSIONS)})",
                        "convert it to mp4 or pick another file")
    return p


def fingerprint(path: Path) -> str:
    """Changes whenever the clip's file (or a folder's frames) change: mtime + size."""
    files = folder_images(path) if path.is_dir() else [path]
    return "|".join(f"{f.name}:{f.stat().st_mtime_ns}:{f.stat().st_size}" for f in files)
