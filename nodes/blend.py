"""Blend mask from the source cross-attention of the edited words."""
from __future__ import annotations

from ..fatezero_attn import windows
from ..fatezero_attn.defaults import BLEND_TAU
from ..fatezero_attn.errors import FateZeroError
from ..fatezero_attn.masks import BlendMask, word_maps
from . import CATEGORY
from .common import BLEND_TYPE, STORE_TYPE, check_source_prompt, positions_of, prompt_words

NODE = "FateZero Blend Mask"


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
            "attention_store": (STORE_TYPE, {"tooltip": "From FateZero DDIM Inversion or FateZero Load Attention Store."}),
            "clip": ("CLIP", {"tooltip": "The checkpoint's CLIP, used to find the words' token positions."}),
            "source_prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "The source prompt exactly as encoded for the inversion."}),
            "blend_words": ("STRING", {"default": "", "tooltip": "Source words of the object you edit, comma separated (e.g. 'jeep' or 'silver, jeep'). Pick the noun of the object; add its adjective when it is edited too."}),
            "tau": ("FLOAT", {"default": BLEND_TAU, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Threshold on the normalised attention (each frame's map over its peak): a pixel is in the mask when its value is strictly greater than tau (>), as in the authors' code (0.3; 0.2-0.3 in the paper). Lower grows the mask; 1.0 empties it (full self-attention replacement)."}),
            "latent_blend": ("BOOLEAN", {"default": False, "tooltip": "Also keep the latent outside the mask equal to the inverted one between 20% and 80% of the steps (for local edits; not for style edits)."}),
            "target_blend_words": ("STRING", {"default": "", "tooltip": "With latent_blend: target words of the new object, comma separated (e.g. 'red, jeep'); their area joins the mask."}),
        }}

    def make(self, attention_store, clip, source_prompt, blend_words, tau, latent_blend=False, target_blend_words=""):
        if not 0.0 <= tau <= 1.0:
            raise FateZeroError(f"{NODE}: 'tau' is {tau}; use a threshold between 0 and 1 (the authors use 0.3).")
        store = attention_store
        check_source_prompt(clip, source_prompt, store, NODE)
        words, tokens = prompt_words(clip, source_prompt, NODE, "source_prompt")
        chosen = [w.strip() for w in blend_words.split(",") if w.strip()]
        if not chosen:
            raise FateZeroError(f"{NODE}: 'blend_words' is empty; name the source word(s) of the object you edit, e.g. 'jeep'.")
        positions = sorted({p for w in chosen for p in positions_of(words, tokens, w, NODE, "blend_words", "source prompt")})
        if store.cross_maps.shape[2] == 0:
            raise FateZeroError(f"{NODE}: the attention store holds no cross-attention of blend layers (the UNet's "
                                "deepest down level with transformers, and the up blocks at its resolution): its "
                                "UNet has no such layers, so this model cannot make a blend mask. Leave blend_mask "
                                "unconnected on the fusion node (full self-attention replacement).")
        targets = [w.strip() for w in target_blend_words.split(",") if w.strip()]
        if latent_blend and not targets:
            raise FateZeroError(f"{NODE}: 'latent_blend' is on but 'target_blend_words' is empty; name the target "
                                "word(s) of the new object (e.g. 'red, jeep') or turn latent_blend off.")
        blend = BlendMask(word_maps(store.cross_maps, positions), tau, chosen, latent_blend, targets)
        h, w = store.info.latent_hw
        preview = blend.preview((h * 8, w * 8))  # [rows, H, W]: a windowed store's rows -> clip frames
        return blend, preview[windows.clip_rows(store.sub_videos())] if store.info.window else preview


NODE_CLASS_MAPPINGS = {"FateZeroBlendMask": FateZeroBlendMask}
NODE_DISPLAY_NAME_MAPPINGS = {"FateZeroBlendMask": NODE}
