"""FateZero DDIM Inversion on a flow-matching video model (Wan): Euler flow inversion, with the
fixed-point refinement by default (``fatezero_attn/inversion/flow.py``)."""
from __future__ import annotations

import logging

import comfy.samplers
import comfy.utils
from comfy.patcher_extension import CallbacksMP
import latent_preview
import torch

from ..fatezero_attn.errors import FateZeroError
from ..fatezero_attn.families import family_of
from ..fatezero_attn.inversion.flow import (InvertedNoise, flow_inversion_sigmas, noise_scale,
                                              sample_flow_inversion)
from ..fatezero_attn.run.capture import Recorder
from ..fatezero_attn.run.patch import FateZeroPatch
from ..fatezero_attn.run.start_image import check_source, latent_start_image
from ..fatezero_attn.store import model_state
from ..fatezero_attn.store.attention_store import AttentionStore, StoreInfo
from .common import context_sha1

log = logging.getLogger("FateZero")
FLOW_SCHEDULER = "simple"  # the scheduler of ComfyUI's Wan templates


def prompt_columns(context: torch.Tensor) -> int:
    """The context positions of the prompt (its words and end token): umT5's padding is zeroed."""
    used = (context[0].abs().sum(-1) > 0).nonzero()
    return int(used.max()) + 1 if len(used) else 1


def invert_flow(node: str, family, model, source_conditioning, latent: dict, steps: int, temporal_mode: str,
                video_groupnorm: bool, store_mode: str, window: int, method: str, iterations: int,
                blend_blocks: str, high_noise_model=None, boundary: float = 0.0, start_image_latent: dict | None = None):
    """The inversion node's work for a Wan MODEL: ``(inverted_latent, store, edit_sigmas, noise,
    expert_split_step)``. With ``high_noise_model`` (Wan 2.2 A14B) the calls at sigma >= ``boundary``
    run that expert, the others ``model`` (the low-noise expert). With ``start_image_latent``
    (TI2V 5B) the frames its noise mask keeps stay clean, as the sampler keeps them."""
    samples = latent["samples"]
    channels = model.model.latent_format.latent_channels
    if samples.dim() != 5 or samples.shape[0] != 1 or samples.shape[1] != channels:
        raise FateZeroError(f"{node}: 'latent' has shape {tuple(samples.shape)}; a Wan model takes one video latent "
                            f"[1, {channels}, frames, H/8, W/8]. Connect VAEEncode of the video's frames (4n+1 "
                            "frames: FateZero Load Video's frame_count) with the Wan VAE.")
    check_source(node, family, source_conditioning, samples.shape)
    if "noise_mask" in latent:
        raise FateZeroError(f"{node}: 'latent' carries a noise mask (Wan22ImageToVideoLatent's start image, or Set "
                            "Latent Noise Mask). Connect VAEEncode of the clip's frames; for a first-frame edit on Wan "
                            "2.2 TI2V 5B connect Wan22ImageToVideoLatent (the clip's first frame) to "
                            "start_image_latent, and on an image-to-video model use WanImageToVideo.")
    samples, start_mask, start_frames = latent_start_image(node, family, start_image_latent, samples)
    if window:
        raise FateZeroError(f"{node}: 'window' is {window}; Wan attends over all latent frames at once and the "
                            "pack does not cut a Wan video into windows. Set window to 0 and load fewer frames "
                            "(FateZero Load Video's frame_count) if memory is short.")
    if store_mode == "cache":
        raise FateZeroError(f"{node}: 'store_mode' cache keeps every fused layer's queries and keys, gigabytes per "
                            "step on a Wan video; Wan stores only the latent trajectory and recomputes the source "
                            "row. Choose 'auto' or 'recompute'.")
    try:
        family.seam(model.model.diffusion_model, blend_blocks)
    except ValueError as e:
        raise FateZeroError(f"{node}: 'blend_blocks' {e}; write a range like '10-20' or 'auto'.") from None
    if temporal_mode != "per-frame" or video_groupnorm:
        log.warning("%s: temporal_mode and video_groupnorm apply to SD UNets; Wan's own 3D attention already spans "
                    "the frames, so they are not used.", node)
    if high_noise_model is not None:
        check_experts(node, family, model, high_noise_model, boundary)
    context = source_conditioning[0][0]
    ms = model.get_model_object("model_sampling")
    # the noise the edit starts from, at sigma 1, is the first sampler's model's
    scale = noise_scale((model if high_noise_model is None else high_noise_model).get_model_object("model_sampling"))
    if not scale > 0.0:
        raise FateZeroError(f"{node}: the {'model' if high_noise_model is None else 'model_high_noise'} samples "
                            f"with noise_scale {scale:g} (ModelNoiseScale), so its sampler starts from no noise at all "
                            "and no inverted latent can be reached. Set ModelNoiseScale's noise_scale above 0 (1 for Wan) "
                            "or remove that node.")
    edit_sigmas = comfy.samplers.calculate_sigmas(ms, FLOW_SCHEDULER, steps).cpu()
    sigmas = flow_inversion_sigmas(edit_sigmas).float()
    n = len(sigmas) - 1

    parts = model_state.describe(model)
    high_parts = model_state.describe(high_noise_model) if high_noise_model is not None else {}
    rec = Recorder(sigmas, columns=prompt_columns(context))
    patched = model.clone()
    expert = None
    if high_noise_model is not None:  # loaded (weights patched) by ComfyUI with the sampled MODEL
        expert = high_noise_model.clone()
        patched.set_additional_models("fatezero_high_noise_expert", [expert])
        # and prepared as the sampled MODEL is (ComfyUI cleans it up with the sampler's models):
        # 0.38 streams a dynamic-VRAM model's blocks ahead only for the patcher it was prepared by
        patched.add_callback_with_key(CallbacksMP.ON_PRE_RUN, "fatezero_high_noise_expert",
                                      lambda _: expert.pre_run())
    patch = FateZeroPatch(family, "per-frame", 0, False, recorder=rec, node=node, blend_choice=blend_blocks,
                          high_noise_expert=(boundary, expert) if expert is not None else None)
    patch.install(patched)
    guider = comfy.samplers.CFGGuider(patched)
    guider.set_conds(source_conditioning, source_conditioning)
    guider.set_cfg(1.0)
    kept = {}
    sampler = comfy.samplers.KSAMPLER(sample_flow_inversion, extra_options={
        "record": rec.record_input, "iterations": iterations if method == "fixed-point" else 0,
        "keep": lambda x: kept.update(x=x.detach().clone())})
    callback = latent_preview.prepare_callback(patched, n)
    try:
        guider.sample(torch.zeros_like(samples), samples, sampler, sigmas, denoise_mask=start_mask, callback=callback,
                      disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=0)
    except (torch.OutOfMemoryError, MemoryError) as e:
        _, _, t, h, w = samples.shape
        raise FateZeroError(f"{node}: out of memory inverting {t} latent frames of {w * family.vae_scale}x{h * family.vae_scale} ({e}). Load "
                            "fewer frames (frame_count) or a smaller width/height, then queue again.") from e
    inverted = kept["x"]  # the sampler's space; its return value passed 1 / (1 - sigma) at sigma 1

    info = StoreInfo(model_id=model_state.digest(parts), steps=n, frames=1, latent_hw=tuple(samples.shape[-2:]),
                     temporal_mode="per-frame", temporal_min_channels=0, video_groupnorm=False,
                     source_context_sha1=context_sha1(context), model_parts=parts, steps_input=steps,
                     store_mode="recompute", model_family=family.name, fuse_max_query=0,
                     latent_frames=samples.shape[2], inversion=method,
                     expert_boundary=boundary if high_noise_model is not None else 0.0,
                     high_noise_model_id=model_state.digest(high_parts) if high_parts else "",
                     high_noise_model_parts=high_parts, start_frames=start_frames)
    if rec.cross_sum:
        cross = torch.stack([rec.cross_sum[j] / rec.cross_count[j] for j in range(n)])
    else:  # no blend blocks chosen; blending is refused downstream
        cross = torch.zeros(n, samples.shape[2], 0, 0, rec.columns)
    store = AttentionStore(info, sigmas, torch.stack([rec.unet_inputs[j] for j in range(n)]),
                           context.detach().cpu().float(), cross.float().cpu(), rec.conds)
    out = latent.copy()
    out["samples"] = model.model.process_latent_out(inverted.cpu().float())
    # the sampler multiplies its noise by the model's noise scale before it starts (ComfyUI >= 0.38)
    store.inverted_latent, store.inverted_noise = out["samples"].clone(), inverted.cpu().float() / scale
    if scale != 1.0:
        log.info("%s: the model samples with noise_scale %g; inverted_noise is the inverted latent divided by it.",
                 node, scale)
    store.clean_latent = model.model.process_latent_in(samples.float()).cpu()  # the sampler's space
    # the sampler's schedule ends at sigma 0; the high-noise sampler edits the steps that start at
    # sigma >= boundary (SplitSigmas' step)
    return out, store, store.sampler_sigmas(), InvertedNoise(store.inverted_noise), store.expert_split_step()


def check_experts(node: str, family, model, high_noise_model, boundary: float) -> None:
    """The two experts of one model: the same family and the same flow schedule (shift)."""
    high_family = family_of(high_noise_model)
    if high_family is None or high_family.name != family.name:
        raise FateZeroError(f"{node}: 'model_high_noise' is {'not a Wan model' if high_family is None else 'of family ' + high_family.name}"
                            f" and 'model' of family {family.name}; connect the two experts of one Wan 2.2 A14B model "
                            "(high-noise here, low-noise to model).")
    ms = [m.get_model_object("model_sampling") for m in (model, high_noise_model)]
    if not torch.equal(ms[0].sigmas.float(), ms[1].sigmas.float()):
        raise FateZeroError(f"{node}: 'model_high_noise' samples on another schedule than 'model' (shift "
                            f"{getattr(ms[1], 'shift', '?')} against {getattr(ms[0], 'shift', '?')}); give both experts "
                            "the same ModelSamplingSD3 shift, as the two samplers use.")
    if not 0.0 < boundary < 1.0:
        raise FateZeroError(f"{node}: 'expert_boundary' is {boundary}; the sigma where the high-noise expert hands "
                            "over lies between 0 and 1 (Wan 2.2 A14B: 0.875 for text-to-video, 0.9 for image-to-video).")
