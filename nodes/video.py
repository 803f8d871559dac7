"""FateZero Load Video: a clip from ComfyUI's input folder as an IMAGE batch."""
from __future__ import annotations

import logging

import folder_paths
import torch

from ..fatezero_attn.video import frame_decoding, video_files, video_io
from ..fatezero_attn.video.video_files import ClipError
from . import CATEGORY as PACK_CATEGORY  # "FateZero"

NODE_NAME = "FateZero Load Video"
MAX_SIZE = 16384  # ComfyUI's MAX_RESOLUTION
WAN_FRAMES = 4  # a Wan VAE (2.1 and 2.2) packs the first frame alone, then 4 frames to a latent frame
log = logging.getLogger("FateZero")


def _error(e: ClipError) -> ValueError:
    # Name the node: ComfyUI shows only the exception text in its error dialog.
    return ValueError(f"{NODE_NAME}: {e}")


class FateZeroLoadVideo:
    CATEGORY = PACK_CATEGORY
    DESCRIPTION = ("Loads frames from a video file (mp4, webm, gif, mov, avi, mkv), an animated WebP "
                   "(as SaveAnimatedWEBP writes) or an image folder (a sub-folder of ComfyUI's input "
                   "folder with png/jpg frames, sorted by name) and resizes them to width x height for "
                   "FateZero. Only the frames needed are decoded.")
    RETURN_TYPES = ("IMAGE", "FLOAT", "INT")
    RETURN_NAMES = ("images", "frame_rate", "frame_count")
    OUTPUT_TOOLTIPS = (
        "The frames as an IMAGE batch [frames, height, width, 3], float32 in 0..1.",
        "Rate to play the frames at: the source rate divided by every_nth, so the clip keeps its "
        "speed (for WebP and GIF, the mean of the frame durations). Image folders and still WebP "
        f"images have no rate and report {frame_decoding.FOLDER_FPS:g} fps.",
        "How many frames were loaded (may be fewer than frame_count near the end of the clip). For Wan, "
        "VAE Encode keeps 4n+1 of them (the log says so when the count is not 4n+1).",
    )
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "video": (video_files.list_clips(folder_paths.get_input_directory()), {
                "video_upload": True,
                "tooltip": "A video file, an animated WebP or an image folder (png/jpg frames sorted "
                           "by name) in ComfyUI's input folder. The upload button takes video files "
                           "only: copy WebP and GIF clips into the input folder. Only animated .webp "
                           "files are listed (still ones are usually images for Load Image); a still "
                           ".webp given anyway (e.g. through the API) loads as a 1-frame clip."}),
            "frame_count": ("INT", {
                "default": 8, "min": 0, "max": 100000,
                "tooltip": "How many frames to load; 0 = all. If the clip has fewer frames from "
                           "start_frame on, the available ones are returned and a warning is logged. "
                           "For Wan use 4n+1 (5, 9, 13, 17, ... 81): its VAE Encode drops the frames past "
                           "the last 4n+1."}),
            "start_frame": ("INT", {
                "default": 0, "min": 0, "max": 10_000_000,
                "tooltip": "Index of the first frame to load (0 = the first frame of the clip)."}),
            "every_nth": ("INT", {
                "default": 1, "min": 1, "max": 1000,
                "tooltip": "Keep every n-th frame from start_frame on (2 = every other frame)."}),
            "width": ("INT", {
                "default": 512, "min": 64, "max": MAX_SIZE, "step": 8,
                "tooltip": "Output width in pixels; a multiple of 8 (the VAE works on 8x8 blocks)."}),
            "height": ("INT", {
                "default": 512, "min": 64, "max": MAX_SIZE, "step": 8,
                "tooltip": "Output height in pixels; a multiple of 8 (the VAE works on 8x8 blocks)."}),
            "resize": (list(video_io.RESIZE_MODES), {
                "default": "center crop",
                "tooltip": "center crop: scale to cover width x height and cut the overhang evenly "
                           "(keeps proportions). stretch: scale to exactly width x height."}),
        }}

    @classmethod
    def _path(cls, video: str):
        return video_files.resolve_clip(folder_paths.get_input_directory(), video)

    @classmethod
    def IS_CHANGED(cls, video: str, **_) -> str:
        # mtime+size instead of hashing: clips can be gigabytes.
        try:
            return video_files.fingerprint(cls._path(video))
        except (ClipError, OSError) as e:
            return f"unavailable: {e}"

    @classmethod
    def VALIDATE_INPUTS(cls, video: str) -> bool | str:
        # Taking `video` here also lets image folders and fresh uploads past the combo check.
        try:
            cls._path(video)
        except ClipError as e:
            return str(_error(e))
        return True

    def load(self, video: str, frame_count: int = 8, start_frame: int = 0, every_nth: int = 1,
             width: int = 512, height: int = 512, resize: str = "center crop") -> tuple[torch.Tensor, float, int]:
        try:
            images, fps = video_io.load_clip(self._path(video), frame_count, start_frame, every_nth,
                                             width, height, resize)  # type: ignore[arg-type]
        except ClipError as e:
            raise _error(e) from None
        wan_note(images.shape[0])
        return images, fps, images.shape[0]


def wan_note(count: int) -> None:
    """Log what a Wan VAE Encode will keep of ``count`` frames when that is not all of them."""
    dropped = (count - 1) % WAN_FRAMES
    if count > 1 and dropped:
        kept = count - dropped
        log.info("%s: %d frames loaded. A Wan VAE encodes 4n+1 frames: VAE Encode keeps the first %d (%d latent "
                 "frames) and drops the last %d; set frame_count to %d or %d to edit every frame with Wan. SD "
                 "models use all %d.", NODE_NAME, count, kept, 1 + (kept - 1) // WAN_FRAMES, dropped, kept,
                 kept + WAN_FRAMES, count)


NODE_CLASS_MAPPINGS = {"FateZeroLoadVideo": FateZeroLoadVideo}
NODE_DISPLAY_NAME_MAPPINGS = {"FateZeroLoadVideo": NODE_NAME}
