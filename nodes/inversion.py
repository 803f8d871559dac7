"""DDIM inversion with attention capture (SD); Euler flow inversion on Wan (``inversion_flow.py``)."""
from __future__ import annotations

import logging
from dataclasses import replace

import comfy.model_management
import comfy.samplers
import comfy.utils
import latent_preview
import torch

from ..fatezero_attn import defaults
from ..fatezero_attn.edit import temporal
from ..fatezero_attn.edit.alignment import MAX_TOKENS
from ..fatezero_attn.edit.schedule import inversion_sigmas
from ..fatezero_attn.errors import FateZeroError
from ..fatezero_attn.families import family_of
from ..fatezero_attn.families.wan import image_to_image_sampling
from ..fatezero_attn.families.sd_layout import attention_layout
from ..fatezero_attn.inversion.ddim import sample_ddim_inversion
from ..fatezero_attn.inversion.flow import METHODS as FLOW_METHODS
from ..fatezero_attn.inversion.flow import InvertedNoise
from ..fatezero_attn.run.capture import Recorder
from ..fatezero_attn.run.patch import FateZeroPatch
from ..fatezero_attn.run.window_sampling import slice_control
from ..fatezero_attn.store import model_state, source_cache
from ..fatezero_attn.store.attention_store import AttentionStore, StoreInfo
from ..fatezero_attn.video import windows
from . import CATEGORY
from .common import STORE_TYPE, check_conditioning_width, context_sha1, too_long
from .inversion_flow import invert_flow

NODE = "FateZero DDIM Inversion"
log = logging.getLogger("FateZero")
CLEAN_SIGMA = ("alphas_cumprod[0] (authors)", "0 (ComfyUI)")


class FateZeroDDIMInversion:
    DESCRIPTION = ("Deterministic inversion of the video latents with the source prompt (guidance 1), capturing "
                   "what attention fusion needs. SD 1.x/2.x/SDXL: DDIM inversion; to edit, sample the inverted "
                   "latent with SamplerCustom: sigmas = edit_sigmas (the steps set here; ends at alphas_cumprod[0] as "
                   "the authors' schedule), sampler KSamplerSelect ddim, add_noise off (KSamplerAdvanced with ddim, "
                   "ddim_uniform, the same steps, add_noise disable also works but ends at sigma 0). Wan 2.1 and 2.2 "
                   "(T2V 1.3B / 14B, TI2V 5B, T2V A14B with its high-noise expert on model_high_noise): Euler flow "
                   "inversion (refined by fixed-point iteration by default) on the 'simple' schedule; to edit, "
                   "SamplerCustomAdvanced with noise = inverted_noise, sigmas = edit_sigmas, sampler euler, "
                   "latent_image = inverted_latent (A14B: one sampler per expert, split at expert_split_step). The "
                   "inputs marked 'Wan only' come last; an SD graph leaves them as they are.")
    CATEGORY = CATEGORY
    FUNCTION = "invert"
    RETURN_TYPES = ("LATENT", STORE_TYPE, "SIGMAS", "NOISE", "INT")
    RETURN_NAMES = ("inverted_latent", "attention_store", "edit_sigmas", "inverted_noise", "expert_split_step")
    OUTPUT_TOOLTIPS = ("The noisy latent to start editing from (add_noise disabled).",
                       "The inversion's attention store, for the blend-mask and fusion nodes.",
                       "The editing schedule: this node's steps, ending at clean_sigma (alphas_cumprod[0] by "
                       "default, where the authors' ends; 0 for Wan). Connect it to SamplerCustom's sigmas.",
                       "For SamplerCustomAdvanced's noise: a flow model (Wan) starts at sigma 1 from the noise "
                       "alone, so the inverted latent comes in here; for SD it is zero (like DisableNoise).",
                       "With model_high_noise (Wan 2.2 A14B): the step at which the high-noise expert hands over, "
                       "for SplitSigmas (its high_sigmas go to the high-noise sampler). 0 with one model.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The checkpoint's MODEL (SD1.x, SD2.x, SDXL from Load Checkpoint, or Wan 2.1 / 2.2 text-to-video from Load Diffusion Model: T2V 1.3B / 14B, TI2V 5B, the A14B low-noise expert), with the LoRAs and patches you want in the source row; connect the same MODEL to the fusion node."}),
            "source_conditioning": ("CONDITIONING", {"tooltip": "CLIPTextEncode of the source prompt, which describes the input video."}),
            "latent": ("LATENT", {"tooltip": "VAEEncode of the video frames: for SD all frames are one batch; for Wan one video latent (4n+1 frames)."}),
            "steps": ("INT", {"default": 50, "min": 1, "max": 1000, "tooltip": "Steps of the inversion and of the edit (edit_sigmas carries them to SamplerCustom; with KSamplerAdvanced set the same number there). The authors use 50 (10 for a fast style edit)."}),
            "temporal_mode": (list(temporal.MODES), {"default": defaults.TEMPORAL_MODE, "tooltip": "SD only (Wan's 3D attention spans the frames itself): spatio-temporal self-attention, where each frame's keys and values come from. 'middle' is the authors' style/attribute setting; 'current+middle' the paper's equation; 'first+previous' Tune-A-Video's."}),
            "temporal_min_channels": ("INT", {"default": defaults.TEMPORAL_MIN_CHANNELS, "min": 0, "max": 4096, "step": 64, "tooltip": "SD only: only blocks with at least this many channels use spatio-temporal attention (the authors: 640 or 1280); smaller blocks stay per frame."}),
            "video_groupnorm": ("BOOLEAN", {"default": defaults.VIDEO_GROUPNORM, "tooltip": "SD only: ResNet GroupNorms take statistics over all frames, as the authors' video UNet does. Off: per frame, as plain ComfyUI."}),
            "clean_sigma": (list(CLEAN_SIGMA), {"default": CLEAN_SIGMA[0], "tooltip": "SD only: where the clean latent sits, at alphas_cumprod[0] as in the authors' code, or at sigma 0 (a flow model's clean latent is at sigma 0)."}),
        }, "optional": {  # optional: graphs saved before these inputs existed still validate
            "store_mode": (list(source_cache.STORE_MODES), {"default": "auto", "tooltip": "'cache' keeps the source row's attention inputs (CPU memory, size logged) so editing costs about what plain sampling costs; 'recompute' keeps only the latent trajectory (smallest) and re-runs the source row at each fused step; 'auto' caches when it takes at most half the free memory. Both give the same edit."}),
            "cache_replace_steps": ("FLOAT", {"default": defaults.CACHE_REPLACE_STEPS, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": "Cache mode: the largest cross/self_replace_steps you will use on the fusion node; the cache covers those steps (steps beyond are recomputed)."}),
            "window": ("INT", {"default": 0, "min": 0, "max": 4096, "tooltip": "SD only (Wan: 0): frames per window for long clips: each window runs as its own video (its frames plus the anchor frame the temporal mode reads), so memory depends on the window, not the clip. 0 = all frames at once. The store records it; the edit follows."}),
            "flow_inversion": (list(FLOW_METHODS), {"default": defaults.WAN_INVERSION, "tooltip": "Wan only: 'euler' inverts with one model call per step; 'fixed-point' (default) solves each step so that the edit's Euler step lands back on the previous latent, with fixed_point_iterations model calls per step (plus one for the first step): 1 costs what 'euler' costs and reconstructs better."}),
            "fixed_point_iterations": ("INT", {"default": defaults.WAN_FIXED_POINT_ITERATIONS, "min": 1, "max": 10, "tooltip": "Wan only, fixed-point: model calls per inversion step (plus one for the first step). 1 (default) costs what 'euler' costs; at few steps (4, lightx2v) use 4: each more call brings the edit's steps closer to the recorded ones."}),
            "blend_blocks": ("STRING", {"default": "auto", "tooltip": "Wan only: transformer blocks whose cross-attention makes the blend mask, e.g. '10-19' or '33%-67%'; 'auto' = " + defaults.WAN_BLEND_BLOCKS + " of the depth."}),
            "model_high_noise": ("MODEL", {"tooltip": "Wan only (Wan 2.2 A14B; SD: leave unconnected): the high-noise expert (model is then the low-noise one). The inversion runs it at sigmas >= expert_boundary; connect it, with the same patches, to the high-noise sampler's fusion node."}),
            "expert_boundary": ("FLOAT", {"default": 0.875, "min": 0.0, "max": 1.0, "step": 0.005, "tooltip": "Wan only (Wan 2.2 A14B): the sigma where the high-noise expert hands over to the low-noise one (0.875 text-to-video, 0.9 image-to-video in the released configs)."}),
            "start_image_latent": ("LATENT", {"tooltip": "Wan only (Wan 2.2 TI2V 5B; otherwise leave unconnected), for a first-frame edit: Wan22ImageToVideoLatent given the clip's first frame (the clip's width, height and length). The inversion keeps that frame clean as the sampler will keep the edited one; give the edit's sampler a Wan22ImageToVideoLatent with the edited first frame as latent_image."}),
        }}

    def invert(self, model, source_conditioning, latent, steps, temporal_mode, temporal_min_channels,
               video_groupnorm, clean_sigma, store_mode="auto", cache_replace_steps=defaults.CACHE_REPLACE_STEPS,
               window=0, flow_inversion=defaults.WAN_INVERSION,
               fixed_point_iterations=defaults.WAN_FIXED_POINT_ITERATIONS, blend_blocks="auto", model_high_noise=None,
               expert_boundary=0.875, start_image_latent=None):
        samples = latent["samples"]
        family = family_of(model)
        if family is None:
            ms = model.get_model_object("model_sampling")
            image_to_image = image_to_image_sampling(ms)
            why = "" if image_to_image is None else (
                f" Its sampling is {image_to_image} (ComfyUI's WAN21_FlowRVS video-to-video model, or a "
                "ModelSamplingDiscrete img_to_img_flow / ModelSamplingAuraFlow img_to_img_velocity patch): it starts "
                "from the input latent, not from noise, so there is no noise to invert the video to.")
            raise FateZeroError(f"{NODE}: 'model' ({type(model.model).__name__}, sampling {type(ms).__name__}) is not an "
                                "SD1.x, SD2.x or SDXL text-to-image UNet on a discrete eps or v-prediction schedule, nor "
                                "a Wan 2.1 / 2.2 text-to-video or image-to-video model on its flow schedule (VACE, Fun, camera, S2V and "
                                f"Animate models are not supported).{why} Load an SD checkpoint with Load Checkpoint "
                                "(without a continuous-schedule (EDM) patch), or a Wan T2V / I2V model with "
                                "Load Diffusion Model (without an image-to-image sampling patch).")
        if len(source_conditioning) != 1:
            raise FateZeroError(f"{NODE}: 'source_conditioning' holds {len(source_conditioning)} conditionings; "
                                "connect one CLIPTextEncode of the source prompt.")
        check_conditioning_width(source_conditioning[0][0], family, model, NODE, "source_conditioning")
        unsupported = sorted({"hooks", "gligen", "area"} & source_conditioning[0][1].keys())
        if unsupported:
            raise FateZeroError(f"{NODE}: 'source_conditioning' carries {', '.join(unsupported)}, which the edit's "
                                "source row cannot replay. Connect the plain CLIPTextEncode of the source prompt "
                                "(ControlNet and InpaintModelConditioning are fine).")
        if family.inverter == "flow":
            return invert_flow(NODE, family, model, source_conditioning, latent, steps, temporal_mode,
                               video_groupnorm, store_mode, window, flow_inversion, fixed_point_iterations,
                               blend_blocks, model_high_noise, expert_boundary, start_image_latent)
        if start_image_latent is not None:
            raise FateZeroError(f"{NODE}: 'start_image_latent' is for Wan 2.2 TI2V 5B's first-frame edits; an "
                                f"{family.name} checkpoint takes none. Leave it unconnected.")
        if model_high_noise is not None:
            raise FateZeroError(f"{NODE}: 'model_high_noise' is for Wan 2.2 A14B's two experts; an {family.name} "
                                "checkpoint is one model. Leave it unconnected.")
        if samples.dim() != 4 or samples.shape[1] != 4:
            raise FateZeroError(f"{NODE}: 'latent' has shape {tuple(samples.shape)}; connect VAEEncode of the video "
                                "with this checkpoint's VAE (frames x 4 x H/8 x W/8).")
        context = source_conditioning[0][0]
        if context.dim() == 3 and context.shape[1] > MAX_TOKENS:  # refused now, not after minutes of inversion
            raise FateZeroError(too_long(NODE, "source_conditioning", f"spans {-(-context.shape[1] // MAX_TOKENS)} "
                                         f"CLIP windows ({context.shape[1]} positions): its prompt is too long"))
        ms = model.get_model_object("model_sampling")
        edit_sigmas = comfy.samplers.calculate_sigmas(ms, "ddim_uniform", steps).cpu()
        clean = float(ms.sigmas[0]) if clean_sigma == CLEAN_SIGMA[0] else 0.0
        sigmas = inversion_sigmas(edit_sigmas, clean)
        n = len(sigmas) - 1
        if n != steps:
            log.warning("FateZero: ddim_uniform makes %d steps of %d (edit_sigmas carries them; KSamplerAdvanced set to %d "
                        "steps makes the same); the store has %d.", n, steps, steps, n)

        parts = model_state.describe(model)  # before sampling: patches may keep state from a run
        subs = windows.sub_videos(samples.shape[0], window, temporal_mode)
        window = window if len(subs) > 1 else 0  # a window as long as the clip is the whole clip
        recorders = [Recorder(sigmas) for _ in subs]
        mode, cached = self._store_mode(model, samples, [len(s.frames) for s in subs], n, store_mode,
                                        cache_replace_steps, temporal_mode, temporal_min_channels,
                                        family.fuse_max_query)
        if mode == "cache":
            for rec, sub in zip(recorders, subs):
                rec.cache = source_cache.SourceCache.for_inversion(len(sub.frames), temporal_mode,
                                                                   temporal_min_channels, n, cached,
                                                                   family.fuse_max_query)
        patch = FateZeroPatch(family, temporal_mode, temporal_min_channels, video_groupnorm, recorder=recorders[0],
                              node=NODE, window=window, window_recorders=recorders if window else None)
        patched = model.clone()
        patch.install(patched)

        guider = comfy.samplers.CFGGuider(patched)
        guider.set_conds(source_conditioning, source_conditioning)
        guider.set_cfg(1.0)
        record = lambda j, x_in: patch.run.recorder.record_input(j, x_in)  # the run's (the window's)
        sampler = comfy.samplers.KSAMPLER(sample_ddim_inversion, extra_options={"record": record})
        callback = latent_preview.prepare_callback(patched, n * len(subs))
        try:
            inverted = guider.sample(torch.zeros_like(samples), samples, sampler, sigmas, callback=callback,
                                     disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=0)
        except (torch.OutOfMemoryError, MemoryError, RuntimeError) as e:
            if not isinstance(e, (torch.OutOfMemoryError, MemoryError)) and "allocate" not in str(e):
                raise
            f, _, h, w = samples.shape
            raise FateZeroError(f"{NODE}: out of memory inverting {f} frames of {w * 8}x{h * 8} ({e}). Set a "
                                "smaller window, load fewer frames (frame_count) or a smaller width/height, or set "
                                "store_mode to recompute (the source cache grows during the inversion), then queue "
                                "again.") from e

        info = StoreInfo(model_id=model_state.digest(parts), steps=n, frames=samples.shape[0],
                         latent_hw=tuple(samples.shape[-2:]), temporal_mode=temporal_mode,
                         temporal_min_channels=temporal_min_channels, video_groupnorm=video_groupnorm,
                         source_context_sha1=context_sha1(context), model_parts=parts,
                         source_control=any(r.had_control for r in recorders), steps_input=steps,
                         store_mode=mode, cache_steps=cached if mode == "cache" else 0, window=window,
                         model_family=family.name, fuse_max_query=family.fuse_max_query)
        control = source_conditioning[0][1].get("control")
        stores = []
        for rec, sub in zip(recorders, subs):
            if rec.cross_sum:
                cross = torch.stack([rec.cross_sum[j] / rec.cross_count[j] for j in range(n)])
            else:  # no layer at the blend level (tiny latents); blending is refused downstream
                cross = torch.zeros(n, len(sub.frames), 0, 0, context.shape[1])
            part = AttentionStore(replace(info, frames=len(sub.frames), window=0), sigmas.float(),
                                  torch.stack([rec.unet_inputs[j] for j in range(n)]), context.detach().cpu().float(),
                                  cross.float().cpu(), rec.conds, rec.cache)
            if rec.had_control:  # replayed in the source row; lives in memory only (not in saved files)
                part.extra["source_control"] = slice_control(control, list(sub.frames), samples.shape[0], {}) \
                    if window else control
            stores.append(part)
        if window:
            anchors = None if subs[0].anchor_row is None else \
                torch.stack([rec.inverted[sub.anchor_row] for rec, sub in zip(recorders, subs)])
            store = AttentionStore.join(info, stores, anchors)
        else:
            store = stores[0]
            store.info = info
        if mode == "cache":
            log.info("FateZero: source cache of %.1f MB for %d of %d steps",
                     sum(r.cache.nbytes() for r in recorders) / 2 ** 20, cached, n)
        out = latent.copy()
        out["samples"] = inverted
        store.inverted_latent = inverted.detach().cpu().clone()  # the store's own: the output may be changed downstream
        return out, store, store.sampler_sigmas(), InvertedNoise(None), 0  # ends at clean_sigma (s_0)

    @staticmethod
    def _store_mode(model, samples, videos: list[int], steps: int, requested: str, replace_steps: float,
                    temporal_mode: str, min_channels: int, max_query: int) -> tuple[str, int]:
        """``recompute`` or ``cache`` (from the cache's size and the memory ComfyUI reports free),
        and the edit steps the cache covers."""
        cached = source_cache.cached_steps(steps, replace_steps)
        if requested == "recompute":
            return requested, cached
        f, _, h, w = samples.shape
        layers = attention_layout(model.model.diffusion_model, (h, w))
        base = model.model
        dtype = getattr(base, "manual_cast_dtype", None) or base.get_dtype()
        estimate = sum(source_cache.estimate_bytes(layers, rows, cached, temporal_mode, min_channels,
                                                   max_query, dtype.itemsize) for rows in videos)
        free = comfy.model_management.get_free_memory(torch.device("cpu"))
        mode = source_cache.choose_mode(requested, estimate, free)
        if mode is None:
            raise FateZeroError(
                f"{NODE}: 'store_mode' cache would keep {estimate / 2 ** 30:.2f} GB of source attention in CPU memory "
                f"({f} frames of {w * 8}x{h * 8}, {cached} cached steps) and ComfyUI reports "
                f"{free / 2 ** 30:.2f} GB free. Choose 'recompute' or 'auto', lower 'cache_replace_steps', or load "
                "fewer frames.")
        if requested == "auto":
            log.info("FateZero: store_mode auto chose %s (cache %.1f MB, %.1f MB free)", mode, estimate / 2 ** 20,
                     free / 2 ** 20)
        return mode, cached


NODE_CLASS_MAPPINGS = {"FateZeroDDIMInversion": FateZeroDDIMInversion}
NODE_DISPLAY_NAME_MAPPINGS = {"FateZeroDDIMInversion": NODE}
