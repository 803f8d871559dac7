"""Latent blending (the authors' local edits): the edit's own target-word maps, summed over
the steps, and a ``PREDICT_NOISE`` wrapper around the whole prediction that makes ComfyUI's
DDIM (Euler) step land on ``z_inv + M (z - z_inv)``."""
from __future__ import annotations

import torch

from ..edit.attention_fusion import attention_probs
from ..edit.masks import blend_latents, latent_blend_steps, threshold_mask, word_maps
from ..edit.schedule import edit_step
from .run_state import RunState


def sum_target_maps(run: RunState, grid: tuple[int, int], q, k, heads: int, info) -> None:
    """Add the fused rows' blend-level cross-attention to the run's target maps."""
    h, w = grid
    for r in info.rows("cond"):
        rows = info.chunk_rows(r)
        maps = attention_probs(q[rows].float(), k[rows].float(), heads).mean(1).view(-1, h, w, k.shape[1])
        run.add_target_maps(maps)


def blended_prediction(run: RunState | None, executor, x, timestep, model_options: dict, seed) -> torch.Tensor:
    """The ``PREDICT_NOISE`` wrapper's body: the prediction, then the latent blend (``latent_blend``)."""
    denoised = executor(x, timestep, model_options, seed)
    if run is None or run.plan is None:
        return denoised
    return latent_blend(run, {"denoised": denoised, "input": x, "sigma": timestep, "model_options": model_options})


def latent_blend(run: RunState, args: dict) -> torch.Tensor:
    """Post-CFG: make the DDIM (Euler) step land on the blended latent.

    The authors blend after the update: ``z = z_inv + M (z - z_inv)``, with ``z_inv`` the
    inverted latent at this step's UNet timestep (one step noisier than z, as in their
    code) and M the source mask of this step (the Blend Mask node's: its words', its given mask or
    both) OR the target words' mask so far."""
    denoised, x = args["denoised"], args["input"]
    plan = run.plan
    sigma = float(args["sigma"][0])
    step = edit_step(sigma, plan.store.sigmas)
    steps = plan.store.info.steps
    sample_sigmas = args["model_options"].get("transformer_options", {}).get("sample_sigmas")
    if step is None or step == 0 or step not in latent_blend_steps(steps) or sample_sigmas is None \
            or run.target_maps is None:
        return denoised
    pos = (sample_sigmas - sigma).abs().argmin()
    sigma_next = float(sample_sigmas[pos + 1])
    x_next = x + (sigma_next - sigma) * (x - denoised) / sigma  # what ComfyUI's ddim step will produce
    j = plan.inversion_call(step)
    size = tuple(x.shape[-2:])
    src = plan.blend.mask(j, size).to(x.device)  # the words' mask, a given mask, or both
    tgt = threshold_mask(word_maps(run.target_maps[None], list(plan.target_blend_positions))[0].to(x), size,
                         plan.blend.tau)
    # both latents in z-space: x = z * sqrt(1 + sigma^2)
    scale_next = (1 + sigma_next ** 2) ** 0.5
    # the inverted latent one step noisier: the input of call j + 1, at sigma s_(j+2)
    z_inv = plan.store.unet_inputs[j + 1].to(x) / (1 + float(plan.store.sigmas[j + 2]) ** 2) ** 0.5
    z_next = blend_latents(x_next / scale_next, z_inv, src | tgt)
    # the denoised value whose Euler step from x reaches z_next * scale_next
    d = (z_next * scale_next - x) / (sigma_next - sigma)
    return x - d * sigma
