"""Spatio-temporal self-attention: each frame's keys and values come from other frames.

Modes (``frames`` is the number of frames of the video, ``mid = (frames - 1) // 2`` as in
the authors' code):
- ``per-frame``: the frame itself (plain image attention);
- ``middle``: the middle frame only (the authors' style and attribute configs);
- ``current+middle``: the frame and the middle frame (the paper's equation);
- ``first+previous``: the first and the previous frame (Tune-A-Video's sparse-causal pattern).
"""
from __future__ import annotations

import torch

MODES = ("per-frame", "middle", "current+middle", "first+previous")


def middle_frame(frames: int) -> int:
    return (frames - 1) // 2


def source_frames(mode: str, frames: int) -> list[list[int]]:
    """For each frame, the frames its keys and values are taken from."""
    mid = middle_frame(frames)
    if mode == "per-frame":
        return [[i] for i in range(frames)]
    if mode == "middle":
        return [[mid] for _ in range(frames)]
    if mode == "current+middle":
        return [[i, mid] for i in range(frames)]
    if mode == "first+previous":
        return [[0, max(i - 1, 0)] for i in range(frames)]
    raise ValueError(f"unknown spatio-temporal mode {mode!r}; expected one of {MODES}")


def gathers(attn: str, mode: str, channels: int, min_channels: int) -> bool:
    """Whether a layer's keys and values come from other frames: self-attention (``attn1``)
    in a block of at least ``min_channels`` channels, in a mode other than per-frame."""
    return attn == "attn1" and mode != "per-frame" and channels >= min_channels


def read_frames(mode: str, frames: int) -> list[int]:
    """The frames whose keys and values some frame reads (``middle``: the middle frame alone)."""
    return sorted({s for src in source_frames(mode, frames) for s in src})


def gather_frames(t: torch.Tensor, frames: int, mode: str) -> torch.Tensor:
    """Keys or values ``[chunks*frames, tokens, dim]`` -> ``[chunks*frames, len(src)*tokens, dim]``.

    Chunks (conditioning branches) stay apart: frame i of a chunk only sees that chunk's frames.
    """
    if mode == "per-frame":
        return t
    b, n, d = t.shape
    index = torch.tensor(source_frames(mode, frames), device=t.device)  # [frames, f]
    video = t.view(b // frames, frames, n, d)
    picked = video[:, index]  # [chunks, frames, f, tokens, dim]
    return picked.reshape(b, index.shape[1] * n, d)


def gather_read_frames(read: torch.Tensor, frames: int, mode: str) -> torch.Tensor:
    """``gather_frames`` of one chunk given only its ``read_frames`` rows ``[len(read), tokens, dim]``."""
    position = {f: i for i, f in enumerate(read_frames(mode, frames))}
    index = torch.tensor([[position[s] for s in src] for src in source_frames(mode, frames)], device=read.device)
    n, d = read.shape[1:]
    return read[index].reshape(frames, index.shape[1] * n, d)  # [frames, f, tokens, dim] -> [frames, f*tokens, dim]
