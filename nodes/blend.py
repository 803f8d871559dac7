"""Blend mask from the source cross-attention of the edited words."""
from __future__ import annotations

import torch

from ..fatezero_attn.defaults import BLEND_TAU
from ..fatezero_attn.edit.masks import BlendMask, crop_like_vae, region_frames, word_maps
from ..fatezero_attn.errors import FateZeroError
from ..fatezero_attn.store import preview as sheet
from . import CATEGORY
from .common import (BLEND_TYPE, CLIP_INPUT, SOURCE_PROMPT_INPUT, STORE_INPUT, check_source_prompt, check_tau,
                     positions_of, prompt_words, text_window, word_list)

NODE = "FateZero Blend Mask"
# a given mask may be stretched over the frame by at most this much (its aspect against the video's):
# more is a mask of other frames (e.g. of the clip before Load Video cropped it), not a rounding
MASK_ASPECT_SLACK = 0.05


class FateZeroBlendMask:
    DESCRIPTION = ("Per-step mask from the inversion's cross-attention of the source words you edit: inside it the "
                   "edit keeps its own self-attention (so the object can change), outside it takes the source's "
                   "(so the rest of the video keeps its structure and motion).")
    CATEGORY = CATEGORY
    FUNCTION = "make"
    RETURN_TYPES = (BLEND_TYPE, "MASK")
    RETURN_NAMES = ("blend_mask", "mask_preview")
    OUTPUT_TOOLTIPS = ("Connect to FateZero Attention Fusion.",
                       "frames x H x W: the share of steps in which each pixel is in the mask (for a preview node).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "attention_store": STORE_INPUT,
            "clip": CLIP_INPUT,
            "source_prompt": SOURCE_PROMPT_INPUT,
            "blend_words": ("STRING", {"default": "", "tooltip": "Source words of the object you edit, comma separated (e.g. 'jeep' or 'silver, jeep'). Pick the noun of the object; add its adjective when it is edited too."}),
            "tau": ("FLOAT", {"default": BLEND_TAU, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Threshold on the normalised attention (each frame's map over its peak): a pixel is in the mask when its value is strictly greater than tau (>), as in the authors' code (0.3; 0.2-0.3 in the paper). Lower grows the mask; 1.0 empties it (full self-attention replacement)."}),
            "latent_blend": ("BOOLEAN", {"default": False, "tooltip": "Also keep the latent outside the mask equal to the inverted one between 20% and 80% of the steps (for local edits; not for style edits)."}),
            "target_blend_words": ("STRING", {"default": "", "tooltip": "With latent_blend: target words of the new object, comma separated (e.g. 'red, jeep'); their area joins the mask."}),
        }, "optional": {
            "mask": ("MASK", {"tooltip": "A mask you already have (e.g. a video segmentation of the object): one per video frame, or one for every frame, at any size of the video's aspect; made from the frames the inversion got. With blend_words: the blend mask is where both the words' attention and this mask are. With blend_words empty: this mask alone. A layer's cell is in when more than half of it is covered; a Wan latent frame takes the union of its video frames."}),
        }}

    def make(self, attention_store, clip, source_prompt, blend_words, tau, latent_blend=False, target_blend_words="",
             mask=None):
        check_tau(tau, NODE)
        store = attention_store
        check_source_prompt(clip, source_prompt, store, NODE)
        words, tokens = prompt_words(clip, source_prompt, NODE, "source_prompt")
        chosen = word_list(blend_words)
        if not chosen and mask is None:
            raise FateZeroError(f"{NODE}: 'blend_words' is empty; name the source word(s) of the object you edit, e.g. "
                                "'jeep', or connect a 'mask' of it.")
        start = text_window(clip).start
        positions = sorted({p for w in chosen
                            for p in positions_of(words, tokens, w, NODE, "blend_words", "source prompt", start)})
        family = store.info.family
        if chosen and family.blocks_by_index and store.cross_maps.shape[2] == 0:
            raise FateZeroError(f"{NODE}: the attention store holds no cross-attention: its inversion's 'blend_blocks' "
                                "chose no block. Invert again with blend_blocks 'auto' or a range like '10-19'.")
        if latent_blend and not family.latent_blend:
            raise FateZeroError(f"{NODE}: 'latent_blend' is not available for {family.name} in this version; the blend mask "
                                "still keeps the edit's own self-attention inside the object. Turn latent_blend off.")
        if (chosen or latent_blend) and store.cross_maps.shape[2] == 0:
            raise FateZeroError(f"{NODE}: the attention store holds no cross-attention of blend layers (the UNet's "
                                "deepest down level with transformers, and the up blocks at its resolution): its "
                                "UNet has no such layers, so this model cannot make a blend mask. Leave blend_mask "
                                "unconnected on the fusion node (full self-attention replacement).")
        targets = word_list(target_blend_words)
        if latent_blend and not targets:
            raise FateZeroError(f"{NODE}: 'latent_blend' is on but 'target_blend_words' is empty; name the target "
                                "word(s) of the new object (e.g. 'red, jeep') or turn latent_blend off.")
        region = given_region(mask, store.info) if mask is not None else None
        # without words only the given mask decides; the empty maps keep the store's steps x frames
        pooled = word_maps(store.cross_maps, positions) if chosen else store.cross_maps.new_zeros(
            *store.cross_maps.shape[:2], 0, 0)
        blend = BlendMask(pooled, tau, chosen, latent_blend, targets, region=region)
        info = store.info
        preview = blend.preview(sheet.video_size(info))  # [map frames, H, W]
        # map frames -> the video's frames (Wan: latent frames -> 4n+1; a windowed store: rows -> clip)
        return blend, preview[sheet.video_rows(info)]


def given_region(mask: torch.Tensor, info) -> torch.Tensor:
    """The 'mask' input (MASK ``[frames, H, W]``) checked against the store's video (``StoreInfo``)
    and mapped to the frames of its maps (``region_frames``)."""
    if mask.ndim == 2:  # some nodes give one mask without the batch axis
        mask = mask[None]
    if mask.ndim != 3 or 0 in mask.shape:
        raise FateZeroError(f"{NODE}: 'mask' has the shape {tuple(mask.shape)}; connect a MASK (frames x height x "
                            "width), e.g. a segmentation node's.")
    mask = mask.detach().cpu()  # kept beside the store's maps; keep_edit moves it to the model's device
    frames, given = len(sheet.video_rows(info)), mask.shape[0]
    if info.latent_frames and given > frames and info.family.latent_frames(given) == info.latent_frames:
        mask = mask[:frames]  # the frames VAE Encode drops from a clip that is not 4n+1 frames long
    elif given not in (1, frames):
        latent = (f" ({info.latent_frames} latent frames; VAE Encode keeps 4n+1 frames, so a mask of {frames} to "
                  f"{frames + info.family.frame_compression - 1} frames fits)" if info.latent_frames else "")
        raise FateZeroError(f"{NODE}: 'mask' has {given} frames and the inverted video {frames}{latent}. Make the mask "
                            "from the frames the inversion got (e.g. segment the IMAGE output of the node that loads "
                            "the clip, with the same frame count and start), or give a single frame, used for every frame.")
    video_hw = sheet.video_size(info)
    mask = crop_like_vae(mask, video_hw, info.family.vae_scale)
    h, w = mask.shape[-2:]
    if abs((h / w) / (video_hw[0] / video_hw[1]) - 1) > MASK_ASPECT_SLACK:
        raise FateZeroError(f"{NODE}: 'mask' is {w}x{h} pixels and the inverted video {video_hw[1]}x{video_hw[0]}, "
                            "another aspect ratio: the mask would be stretched off the object. Make the mask from "
                            "the frames the inversion got (after any crop or resize of the clip).")
    return region_frames(mask, sheet.map_frame_sources(info))


NODE_CLASS_MAPPINGS = {"FateZeroBlendMask": FateZeroBlendMask}
NODE_DISPLAY_NAME_MAPPINGS = {"FateZeroBlendMask": NODE}
