"""Spatio-temporal self-attention as a MODEL patch for plain video sampling."""
from __future__ import annotations

from ..fatezero_attn.edit import temporal
from ..fatezero_attn.errors import FateZeroError
from ..fatezero_attn.families import family_of, sd_unet
from ..fatezero_attn.run.patch import FateZeroPatch
from . import CATEGORY

NODE = "FateZero Spatio-Temporal Attention"


class FateZeroSpatioTemporalAttention:
    DESCRIPTION = ("Each frame's self-attention takes its keys and values from other frames of the batch, so a "
                   "batch of frames is denoised as one video (less flicker). The inversion and fusion nodes "
                   "already do this with their own settings; use this node for plain video sampling.")
    CATEGORY = CATEGORY
    FUNCTION = "patch"
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("A patched clone; the MODEL you connected is left untouched.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "An SD1.x, SD2.x or SDXL MODEL."}),
            "temporal_mode": (list(temporal.MODES), {"default": "current+middle", "tooltip": "Where each frame's keys and values come from: itself ('per-frame'), the middle frame, itself and the middle frame (the paper), or the first and previous frames (Tune-A-Video)."}),
            "temporal_min_channels": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 64, "tooltip": "Only blocks with at least this many channels attend across frames."}),
            "video_groupnorm": ("BOOLEAN", {"default": False, "tooltip": "ResNet GroupNorms take statistics over all frames of the batch."}),
        }, "optional": {
            "window": ("INT", {"default": 0, "min": 0, "max": 4096, "tooltip": "Frames per window for long clips: each window is sampled as its own video with the anchor frame the mode reads (memory follows the window). 0 = all frames at once."}),
        }}

    def patch(self, model, temporal_mode, temporal_min_channels, video_groupnorm, window=0):
        family = family_of(model)
        if family is not None and not family.spatio_temporal:
            raise FateZeroError(f"{NODE}: 'model' is a {family.name} video model, whose own 3D attention already "
                                "spans every frame; spatio-temporal attention is for SD image UNets. Leave this node "
                                "out of the graph.")
        patched = model.clone()
        # any UNet of ComfyUI's openaimodel takes the SD seam, a family the pack edits or not
        FateZeroPatch(family or sd_unet.SD1, temporal_mode, temporal_min_channels, video_groupnorm, node=NODE,
                      window=window).install(patched)
        return (patched,)


NODE_CLASS_MAPPINGS = {"FateZeroSpatioTemporalAttention": FateZeroSpatioTemporalAttention}
NODE_DISPLAY_NAME_MAPPINGS = {"FateZeroSpatioTemporalAttention": NODE}
