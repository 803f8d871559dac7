"""Windows of a long clip: independent sub-videos around a shared anchor frame.

Every UNet call of the inversion and of the edit holds all frames of the clip, so memory
grows with the clip. With a window length ``w`` the clip is cut into consecutive windows of
``w`` frames, and each window runs as its own video (its own sampling, from inversion to the
edited latent): its frames plus the *anchor*, the frame the spatio-temporal mode reads
from every frame (``middle`` and ``current+middle``: the clip's middle frame; ``first+previous``:
the clip's first frame; ``per-frame``: none). The anchor sits where the mode looks for it
in the sub-video (its middle frame ``(n - 1) // 2``, or its first frame), so a sub-video is an
ordinary video to everything downstream, and a window can be edited as a job of its own.

Why independent sub-videos: each window then needs only its own frames in memory, the
windows can run in any order or on other machines, and per frame the math is the
all-frames run's wherever the anchor is all a frame reads (per-frame GroupNorm with the
``per-frame``, ``middle`` and ``current+middle`` modes; the anchor's own computation reads
only itself). Video-wide GroupNorm takes its statistics over the sub-video, and in
``first+previous`` a window's first frame reads the anchor as its previous frame: both
differ slightly from the all-frames run (README, "Long clips").

The anchor's output is taken from the window that holds it among its own frames; the
copies in other windows are dropped.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..edit import temporal


@dataclass(frozen=True)
class SubVideo:
    """One window as a video: ``frames[r]`` is the clip frame of row ``r``."""
    frames: tuple[int, ...]
    anchor_row: int | None  # the row the spatio-temporal mode reads, None for per-frame
    borrowed_anchor: bool   # the anchor is a copy (not one of this window's own frames)

    @property
    def own_rows(self) -> list[int]:
        """The rows whose output belongs to this window (all but a borrowed anchor)."""
        return [r for r in range(len(self.frames)) if not (self.borrowed_anchor and r == self.anchor_row)]


def anchor_frame(mode: str, frames: int) -> int | None:
    """The clip frame every window's spatio-temporal attention reads, or None (per-frame)."""
    temporal.source_frames(mode, 1)  # validates the mode
    if mode == "per-frame":
        return None
    return 0 if mode == "first+previous" else temporal.middle_frame(frames)


def anchor_row(mode: str, rows: int) -> int | None:
    """Where the mode looks for the anchor in a sub-video of ``rows`` frames."""
    if mode == "per-frame":
        return None
    return 0 if mode == "first+previous" else temporal.middle_frame(rows)


def sub_video(own: list[int], anchor: int | None, mode: str) -> SubVideo:
    """A window's own clip frames (ascending) as a sub-video with the anchor at its place."""
    if anchor is None:
        return SubVideo(tuple(own), None, False)
    borrowed = anchor not in own
    rest = [f for f in own if f != anchor]
    row = anchor_row(mode, len(rest) + 1)
    return SubVideo(tuple(rest[:row] + [anchor] + rest[row:]), row, borrowed)


def sub_videos(frames: int, window: int, mode: str) -> list[SubVideo]:
    """The clip's windows; ``window`` 0 (or at least ``frames``) is one sub-video of all frames."""
    if window <= 0 or window >= frames:
        window = frames
    anchor = anchor_frame(mode, frames)
    return [sub_video(list(range(start, min(start + window, frames))), anchor, mode)
            for start in range(0, frames, window)]


def row_count(frames: int, window: int, mode: str) -> int:
    """Rows of all sub-videos laid end to end (what a windowed store holds per step)."""
    return sum(len(s.frames) for s in sub_videos(frames, window, mode))


def row_starts(subs: list[SubVideo]) -> list[int]:
    starts, at = [], 0
    for s in subs:
        starts.append(at)
        at += len(s.frames)
    return starts


def anchor_owner(subs: list[SubVideo]) -> int | None:
    """The window whose own frames hold the anchor (None in per-frame mode)."""
    return next((k for k, s in enumerate(subs) if s.anchor_row is not None and not s.borrowed_anchor), None)


def clip_rows(subs: list[SubVideo]) -> list[int]:
    """For each clip frame, its output row among the sub-videos laid end to end."""
    out: dict[int, int] = {}
    for start, s in zip(row_starts(subs), subs):
        for r in s.own_rows:
            out[s.frames[r]] = start + r
    return [out[f] for f in range(len(out))]
