"""Attention preview: the source cross-attention of the prompt's words over the frames, to choose
blend words, tau and reweights by looking (issue 25). Reads the store's maps; runs no model."""
from __future__ import annotations

import weakref

from ..fatezero_attn.defaults import BLEND_TAU
from ..fatezero_attn.edit.schedule import inversion_call
from ..fatezero_attn.errors import FateZeroError
from ..fatezero_attn.store import preview
from . import CATEGORY
from .common import (CLIP_INPUT, SOURCE_PROMPT_INPUT, STORE_INPUT, check_source_prompt, check_tau, positions_of,
                     prompt_words, text_window, word_list)

NODE = "FateZero Attention Preview"
_CHECKED: list = []  # weak (clip, store) and prompt that passed check_source_prompt, newest first


class FateZeroAttentionPreview:
    DESCRIPTION = ("Heat maps of the inversion's cross-attention for each word of the source prompt over the frames "
                   "(bright = where the word attends; each frame scaled to its own peak, as tau is, so a word that "
                   "attends evenly everywhere shows a flat bright tile; the label gives the share of the attention the "
                   "word gets, which reweighting scales), and a last row with the blend mask at tau outlined in cyan "
                   "(outside dimmed): the Blend Mask node's mask exactly. One row per word, one column per frame, 8 "
                   "frames per image of the batch. The mask widens a word's map by one attention cell (the authors' "
                   "3x3 max-pool), so the outline sits about a cell outside the bright area. Connect to Preview Image.")
    CATEGORY = CATEGORY
    FUNCTION = "render"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("preview",)
    OUTPUT_TOOLTIPS = ("Pages of the preview sheet (8 frames each) for Preview Image or Save Image.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "attention_store": STORE_INPUT,
            "clip": CLIP_INPUT,
            "source_prompt": SOURCE_PROMPT_INPUT,
            "words": ("STRING", {"default": "", "tooltip": "Source words to show, comma separated, one row each (a row may be several words, e.g. 'silver jeep'). Empty = every word of the source prompt."}),
            "step": ("INT", {"default": -1, "min": -1, "max": 10000, "tooltip": "Which attention: -1 = the mean over the edit steps where self-attention and the blend mask are fused at the default replace fraction 0.8 (the first 80% of the steps). k >= 0 = edit step k of the sampler (0 = the first, noisiest step), whose attention is the inversion's call at the same timestep (call steps-1-k)."}),
            "tau": ("FLOAT", {"default": BLEND_TAU, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "The blend mask's threshold, as on FateZero Blend Mask (a pixel is in the mask when its attention over the frame's peak is > tau). With step -1 the outline holds the pixels in the mask at half of the steps or more."}),
            "blend_words": ("STRING", {"default": "", "tooltip": "Source words of the blend mask, comma separated, as on FateZero Blend Mask: their mask at tau is outlined in the last row. Empty = no mask row."}),
        }, "optional": {
            "images": ("IMAGE", {"tooltip": "The inversion's frames (what VAE Encode got): the heat maps are drawn over them. Without it, over gray."}),
            "max_frames": ("INT", {"default": 16, "min": 0, "max": 4096, "tooltip": "Show this many evenly spaced frames (first and last included); 0 = every frame (8 per output image)."}),
        }}

    def render(self, attention_store, clip, source_prompt, words, step, tau, blend_words, images=None, max_frames=16):
        store, info = attention_store, attention_store.info
        check_tau(tau, NODE)
        if not -1 <= step < info.steps:
            raise FateZeroError(f"{NODE}: 'step' is {step}, but the attention store has {info.steps} steps; use -1 "
                                f"(the mean over the fused steps) or an edit step from 0 to {info.steps - 1}.")
        if store.cross_maps.shape[2] == 0:
            raise FateZeroError(f"{NODE}: the attention store holds no cross-attention of blend layers (for Wan: its "
                                "inversion's 'blend_blocks' chose none), so there is nothing to preview. Invert again "
                                "with a model that has such layers (Wan: blend_blocks 'auto').")
        self._check_prompt(clip, source_prompt, store)
        prompt, tokens = prompt_words(clip, source_prompt, NODE, "source_prompt")
        start = text_window(clip).start
        shown = word_list(words) or list(dict.fromkeys(w.lower() for w in prompt))
        positions = {w: positions_of(prompt, tokens, w, NODE, "words", "source prompt", start) for w in shown}
        blend = word_list(blend_words)
        blend_pos = sorted({p for w in blend
                            for p in positions_of(prompt, tokens, w, NODE, "blend_words", "source prompt", start)})

        rows_of = preview.video_rows(info)
        frames = len(rows_of)
        size = preview.video_size(info)
        if images is not None:
            size = self._check_images(images, frames, info, size)
        ids = preview.pick_frames(frames, max_frames)
        rows = [rows_of[f] for f in ids]
        tile = preview.tile_size(size)
        base = preview.frame_tiles(images, ids, tile)
        calls = preview.edit_calls(info.steps, step)
        maps = preview.select(store.cross_maps, calls, rows)
        mean = maps.mean(0)
        gray = preview.grayscale(base)
        sheet = []
        for w in shown:
            share = preview.attention_share(mean, positions[w])
            heat = preview.heat_tiles(gray, preview.word_heat(mean, positions[w], tile))
            sheet.append(preview.Row(w, f"{100 * share:.1f}% of attention", heat))
        if blend:
            mask = preview.blend_mask(maps, blend_pos, tile, tau)
            sheet.append(preview.Row("blend mask", f"{', '.join(blend)}  tau {tau:.2f}", preview.mask_tiles(base, mask)))
        last = inversion_call(info.steps, calls[-1])  # the last edit step shown
        corner = f"step {step} of {info.steps}" if step >= 0 else f"steps 0-{last} of {info.steps}"
        return (preview.sheet(sheet, ids, corner)[0],)

    @staticmethod
    def _check_prompt(clip, prompt: str, store) -> None:
        """``check_source_prompt`` (a text-encoder run), skipped for the CLIP, store and prompt last
        checked: changing words, tau or step then redraws at once."""
        if any(c() is clip and s() is store and p == prompt for c, s, p in _CHECKED):
            return
        check_source_prompt(clip, prompt, store, NODE)
        _CHECKED[:] = [(weakref.ref(clip), weakref.ref(store), prompt)] + _CHECKED[:3]

    @staticmethod
    def _check_images(images, frames: int, info, size: tuple[int, int]) -> tuple[int, int]:
        """The images' size; they must be the store's video (Wan: any count the VAE encodes to its latent frames)."""
        n = images.shape[0]
        fits = info.family.latent_frames(n) == info.latent_frames if info.latent_frames else n == frames
        if images.dim() != 4 or images.shape[-1] < 3 or not fits:
            c = info.family.frame_compression
            want = (f"{frames} frames ({c}n+1 for its {info.latent_frames} latent frames)" if info.latent_frames
                    else f"{frames} frames")
            raise FateZeroError(f"{NODE}: 'images' holds {n} frames of shape {tuple(images.shape[1:])}, but the "
                                f"attention store's video has {want}. Connect the frames that were encoded for the "
                                "inversion, or leave 'images' unconnected to preview over gray.")
        h, w = images.shape[1:3]
        if abs(w / h - size[1] / size[0]) > 0.02 * size[1] / size[0]:
            raise FateZeroError(f"{NODE}: 'images' are {w}x{h}, but the attention store was inverted at "
                                f"{size[1]}x{size[0]} (another aspect ratio). Connect the frames that were encoded "
                                "for the inversion (any scale of them), or leave 'images' unconnected.")
        return h, w


NODE_CLASS_MAPPINGS = {"FateZeroAttentionPreview": FateZeroAttentionPreview}
NODE_DISPLAY_NAME_MAPPINGS = {"FateZeroAttentionPreview": NODE}
