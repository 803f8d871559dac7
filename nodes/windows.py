"""Windows as separate queue jobs: cut one window (plus the anchor) out of a clip, and keep
only the window's own frames at the end (``fatezero_attn/windows.py``)."""
from __future__ import annotations

from dataclasses import dataclass

from ..fatezero_attn.edit import temporal
from ..fatezero_attn.errors import FateZeroError
from ..fatezero_attn.video import windows
from . import CATEGORY

WINDOW_TYPE = "FATEZERO_WINDOW"
FRAMES_NODE = "FateZero Window Frames"
OUTPUT_NODE = "FateZero Window Output"


@dataclass(frozen=True)
class ClipWindow:
    """Window ``index`` of ``count`` of a clip of ``clip_frames`` frames, as a sub-video."""
    sub: windows.SubVideo
    index: int
    count: int
    clip_frames: int

    @property
    def own_frames(self) -> list[int]:
        return [self.sub.frames[r] for r in self.sub.own_rows]


class FateZeroWindowFrames:
    DESCRIPTION = ("One window of a long clip as its own video, for editing a clip as several queue jobs (one "
                   "window each, on one server or several): the window's frames plus the anchor frame the temporal "
                   "mode reads, placed where that mode reads it. Invert it with window 0 and the same temporal mode; "
                   "every job gets the same anchor, so the jobs' frames equal one windowed job's. After decoding, "
                   "FateZero Window Output keeps the window's own frames.")
    CATEGORY = CATEGORY
    FUNCTION = "cut"
    RETURN_TYPES = ("IMAGE", WINDOW_TYPE, "INT")
    RETURN_NAMES = ("images", "window", "window_count")
    OUTPUT_TOOLTIPS = ("The sub-video: this window's frames and the anchor (one more frame unless the window holds it).",
                       "Which frames these are; connect to FateZero Window Output.",
                       "How many windows the clip has (queue one job per window_index below it).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "The whole clip (FateZero Load Video with all frames): every job must see the same clip to take the same anchor."}),
            "window": ("INT", {"default": 16, "min": 1, "max": 4096, "tooltip": "Frames per window, as the inversion's window would be."}),
            "window_index": ("INT", {"default": 0, "min": 0, "max": 100000, "tooltip": "Which window this job edits: 0 for frames 0..window-1, 1 for the next, ..."}),
            "temporal_mode": (list(temporal.MODES), {"default": "middle", "tooltip": "The inversion's temporal_mode: it decides the anchor (the clip's middle frame, or its first for first+previous; none for per-frame)."}),
        }}

    def cut(self, images, window, window_index, temporal_mode):
        frames = images.shape[0]
        subs = windows.sub_videos(frames, window, temporal_mode)
        if not 0 <= window_index < len(subs):
            raise FateZeroError(f"{FRAMES_NODE}: 'window_index' is {window_index}, but {frames} frames in windows of "
                                f"{window} make {len(subs)} windows; use 0 to {len(subs) - 1}.")
        sub = subs[window_index]
        return images[list(sub.frames)], ClipWindow(sub, window_index, len(subs), frames), len(subs)


class FateZeroWindowOutput:
    DESCRIPTION = ("Keeps a window's own frames, in clip order: drops the anchor frame the window borrowed (the "
                   "window that holds the anchor keeps it). Join the jobs' outputs in window order for the clip.")
    CATEGORY = CATEGORY
    FUNCTION = "keep"
    RETURN_TYPES = ("LATENT", "IMAGE", "INT")
    RETURN_NAMES = ("latent", "images", "first_frame")
    OUTPUT_TOOLTIPS = ("The window's own latents (when a latent is connected): drop the anchor before decoding.",
                       "The window's own frames (when images are connected).",
                       "The clip index of the first frame kept, e.g. for a file name prefix.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "window": (WINDOW_TYPE, {"tooltip": "From FateZero Window Frames."}),
        }, "optional": {
            "latent": ("LATENT", {"tooltip": "The edited sub-video's latent (one row per sub-video frame)."}),
            "images": ("IMAGE", {"tooltip": "The decoded sub-video."}),
        }}

    def keep(self, window: ClipWindow, latent=None, images=None):
        if latent is None and images is None:
            raise FateZeroError(f"{OUTPUT_NODE}: connect 'latent' (before VAE Decode) or 'images' (after it).")
        rows = window.sub.own_rows
        for name, t in (("latent", None if latent is None else latent["samples"]), ("images", images)):
            if t is not None and t.shape[0] != len(window.sub.frames):
                raise FateZeroError(f"{OUTPUT_NODE}: '{name}' has {t.shape[0]} frames, window {window.index} has "
                                    f"{len(window.sub.frames)} (its frames and the anchor); connect the sub-video "
                                    "from FateZero Window Frames after editing, not another batch.")
        # rows in clip order: a window that holds the anchor has it moved to the mode's place
        order = [r for _, r in sorted(zip([window.sub.frames[r] for r in rows], rows))]
        kept = None
        if latent is not None:
            kept = {k: v for k, v in latent.items() if k not in ("samples", "batch_index", "noise_mask")}
            kept["samples"] = latent["samples"][order]
        return kept, None if images is None else images[order], min(window.own_frames)


NODE_CLASS_MAPPINGS = {"FateZeroWindowFrames": FateZeroWindowFrames, "FateZeroWindowOutput": FateZeroWindowOutput}
NODE_DISPLAY_NAME_MAPPINGS = {"FateZeroWindowFrames": FRAMES_NODE, "FateZeroWindowOutput": OUTPUT_NODE}
