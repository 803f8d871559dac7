"""Fused sampling: a patched MODEL clone for core SamplerCustom (on the inversion's edit_sigmas) or KSamplerAdvanced."""
from __future__ import annotations

import torch

from ..fatezero_attn.defaults import CROSS_REPLACE_STEPS, SELF_REPLACE_STEPS, WAN_FUSED_BLOCKS
from ..fatezero_attn.edit.alignment import flatten, refine_mapper, replace_mapper
from ..fatezero_attn.edit.schedule import cross_replace_count, replace_step_counts
from ..fatezero_attn.errors import FateZeroError
from ..fatezero_attn.run.patch import FateZeroPatch
from ..fatezero_attn.run.plan import FusionPlan
from . import CATEGORY
from .common import (BLEND_TYPE, STORE_TYPE, check_source_prompt, check_store_conditioning, check_store_model,
                     parse_word_values, positions_of, prompt_words, text_window)

NODE = "FateZero Attention Fusion"
MODES = ("auto", "replace", "refine")
SOURCE_LATENTS = ("inverted", "noised source")


class FateZeroAttentionFusion:
    DESCRIPTION = ("Patches a clone of MODEL so that sampling from the inverted latent with the target prompt fuses "
                   "the inversion's self- and cross-attention into the positive branch (FateZero). Use it with "
                   "SamplerCustom: sigmas = the inversion's edit_sigmas (ends at alphas_cumprod[0], the authors' "
                   "exact schedule), sampler KSamplerSelect ddim, add_noise off, CFG 7.5. Alternative: "
                   "KSamplerAdvanced with ddim, ddim_uniform, the inversion's steps, add_noise disable, CFG 7.5, "
                   "which ends at sigma 0 instead. Wan 2.1 / 2.2: SamplerCustomAdvanced with the inversion's "
                   "inverted_noise, edit_sigmas and inverted_latent, sampler euler, CFGGuider.")
    CATEGORY = CATEGORY
    FUNCTION = "patch"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("A patched clone; the MODEL you connected is left untouched.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The same MODEL the inversion used (same LoRAs and patches). Patches meant only for the edit go on this node's output."}),
            "attention_store": (STORE_TYPE, {"tooltip": "From FateZero DDIM Inversion or FateZero Load Attention Store."}),
            "clip": ("CLIP", {"tooltip": "The checkpoint's CLIP, for the token mapping between the prompts."}),
            "source_prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "The source prompt exactly as encoded for the inversion."}),
            "target_prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "The edited prompt exactly as encoded for the sampler's positive input."}),
            "cross_replace_steps": ("FLOAT", {"default": CROSS_REPLACE_STEPS, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": "Share of the first steps whose cross-attention comes from the source (the authors: 0.8 for style, 0.5-0.7 for attributes). Higher keeps more of the layout."}),
            "self_replace_steps": ("FLOAT", {"default": SELF_REPLACE_STEPS, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": "Share of the first steps whose self-attention comes from the source (structure and motion). Lower lets shapes change."}),
            "mapping": (list(MODES), {"default": "auto", "tooltip": "Word swap ('replace', same token count) or 'refine' (words added or removed). 'auto' picks replace when both prompts have the same number of tokens."}),
            "reweight": ("STRING", {"default": "", "tooltip": "Target words whose cross-attention is scaled, 'word:value' comma separated (e.g. 'watercolor:10' for a style word)."}),
            "cross_replace_words": ("STRING", {"default": "", "tooltip": "Per-word cross_replace_steps, 'word:fraction' comma separated (target words); others use the global value."}),
        }, "optional": {
            "blend_mask": (BLEND_TYPE, {"tooltip": "From FateZero Blend Mask: keep the edit's own self-attention inside the edited object."}),
            "fused_blocks": ("STRING", {"default": "auto", "tooltip": "Wan only (SD layers are chosen by size): transformer blocks whose self- and cross-attention are fused, e.g. '0-14' or '0%-50%' ('all' for every block); 'auto' = " + WAN_FUSED_BLOCKS + " of the depth."}),
            "source_latents": (list(SOURCE_LATENTS), {"default": SOURCE_LATENTS[0], "tooltip": "Wan: where the source row's latent at each step comes from. 'inverted': the inversion's trajectory (sample from its inverted_noise on its edit_sigmas). 'noised source': the clean source latent noised to each step's sigma with the noise connected here, which the sampler must also use (RandomNoise, latent_image = the source latent); the sampler may then use any steps, scheduler and sampler."}),
            "noise": ("NOISE", {"tooltip": "Wan only, source_latents 'noised source': the same NOISE (e.g. RandomNoise) the sampler starts from."}),
        }}

    def patch(self, model, attention_store, clip, source_prompt, target_prompt, cross_replace_steps,
              self_replace_steps, mapping, reweight, cross_replace_words, blend_mask=None, fused_blocks="auto",
              source_latents=SOURCE_LATENTS[0], noise=None):
        store = attention_store
        source_noise = noised_source(store, source_latents, noise)
        for name, value in (("cross_replace_steps", cross_replace_steps), ("self_replace_steps", self_replace_steps)):
            if not 0.0 <= value <= 1.0:
                raise FateZeroError(f"{NODE}: '{name}' is {value}; use a fraction of the steps between 0 and 1.")
        expert = check_store_model(store, model, NODE)
        check_source_prompt(clip, source_prompt, store, NODE)
        src_words, src_tokens = prompt_words(clip, source_prompt, NODE, "source_prompt")
        tgt_words, tgt_tokens = prompt_words(clip, target_prompt, NODE, "target_prompt")
        window = text_window(clip)
        n_tokens, start = window.length, window.start

        if mapping == "auto":
            mapping = "replace" if len(flatten(src_tokens)) == len(flatten(tgt_tokens)) else "refine"
        if mapping == "replace":
            if len(src_words) != len(tgt_words):
                raise FateZeroError(f"{NODE}: 'mapping' replace swaps words one for one, but the source prompt has "
                                    f"{len(src_words)} words and the target {len(tgt_words)}; choose 'refine' or 'auto'.")
            S, aligned = replace_mapper(src_tokens, tgt_tokens, n_tokens, start), torch.ones(n_tokens)
        else:
            S, aligned = refine_mapper(src_tokens, tgt_tokens, n_tokens, start)

        steps = store.info.steps
        cross_steps, self_steps = replace_step_counts(steps, cross_replace_steps, self_replace_steps)
        cross_steps_per_token = torch.full((n_tokens,), float(cross_steps))
        for word, frac in parse_word_values(cross_replace_words, NODE, "cross_replace_words", 0.0, 1.0).items():
            positions = positions_of(tgt_words, tgt_tokens, word, NODE, "cross_replace_words", "target prompt", start)
            cross_steps_per_token[positions] = float(cross_replace_count(steps, frac))
        equalizer = torch.ones(n_tokens)
        for word, value in parse_word_values(reweight, NODE, "reweight", -100.0, 100.0).items():
            equalizer[positions_of(tgt_words, tgt_tokens, word, NODE, "reweight", "target prompt", start)] = value

        target_blend = []
        if blend_mask is not None and blend_mask.latent_blend:
            target_blend = sorted({p for w in blend_mask.target_words
                                   for p in positions_of(tgt_words, tgt_tokens, w, NODE, "blend_mask's target_blend_words",
                                                         "target prompt", start)})
        if blend_mask is not None and tuple(blend_mask.pooled.shape[:2]) != (steps, store.map_frames):
            raise FateZeroError(f"{NODE}: 'blend_mask' was made from another attention store ({tuple(blend_mask.pooled.shape[:2])} "
                                f"steps x frames, this store {steps} x {store.map_frames}); connect FateZero Blend Mask to "
                                "the same attention_store as this node.")
        # the sampler's positive rows are checked against this (only the target's rows are fused)
        target_context = clip.encode_from_tokens(clip.tokenize(target_prompt))[0].detach().float().cpu()
        family = store.info.family
        try:
            fused_sites = family.fused_sites(model.model.diffusion_model, fused_blocks)
        except ValueError as e:
            raise FateZeroError(f"{NODE}: 'fused_blocks' {e}; write a range like '0-14', 'all' or 'auto'.") from None
        plan = FusionPlan(store, S, aligned, equalizer, cross_steps_per_token, self_steps, blend=blend_mask,
                          target_blend_positions=target_blend, max_query=store.info.fuse_max_query,
                          fused_sites=fused_sites, expert=expert, target_context=target_context,
                          target_prompt=target_prompt, source_noise=source_noise)
        check_store_conditioning(store, NODE, plan.fused_steps)
        patch = FateZeroPatch(family, store.info.temporal_mode, store.info.temporal_min_channels,
                              store.info.video_groupnorm, plan=plan, node=NODE)
        patched = model.clone()
        patch.install(patched)
        return (patched,)


def noised_source(store, source_latents: str, noise) -> torch.Tensor | None:
    """The noised-source mode's noise (the sampler's, drawn for the store's latent), or None."""
    if source_latents == SOURCE_LATENTS[0]:
        return None
    if store.info.family.inverter != "flow" or store.clean_latent is None:
        why = ("a store from an older version of the pack, which lacks the clean latent; run the inversion again"
               if store.info.family.inverter == "flow" else f"a {store.info.model_family} store: SD edits from its "
               "inverted trajectory")
        raise FateZeroError(f"{NODE}: 'source_latents' noised source needs a Wan store with its clean latent; this is "
                            f"{why}. Or choose 'inverted'.")
    if noise is None:
        raise FateZeroError(f"{NODE}: 'source_latents' noised source brings the source to each step's sigma with the "
                            "noise the sampler starts from; connect that NOISE (e.g. RandomNoise) to 'noise' as well "
                            "as to the sampler, or choose 'inverted'.")
    drawn = noise.generate_noise({"samples": torch.zeros_like(store.clean_latent)})
    if tuple(drawn.shape) != tuple(store.clean_latent.shape):
        raise FateZeroError(f"{NODE}: 'noise' gave a tensor of shape {tuple(drawn.shape)} for a latent of "
                            f"{tuple(store.clean_latent.shape)}; connect RandomNoise (or another core NOISE).")
    return drawn.float()


NODE_CLASS_MAPPINGS = {"FateZeroAttentionFusion": FateZeroAttentionFusion}
NODE_DISPLAY_NAME_MAPPINGS = {"FateZeroAttentionFusion": NODE}
