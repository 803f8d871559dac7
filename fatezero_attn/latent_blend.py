"""Latent blending (the authors' local edits): the edit's own target-word maps, summed over
the steps, and a ``PREDICT_NOISE`` wrapper around the whole prediction that makes ComfyUI's
DDIM (Euler) step land on ``z_inv + M (z - z_inv)``. Mixed into ``FateZeroPatch``."""
from __future__ import annotations

import torch

from .fusion import attention_probs
from .masks import blend_latents, latent_blend_steps, threshold_mask, word_maps
from .schedule import edit_step


class LatentBlend:

    def _sum_target_maps(self, q, k, extra: dict, info: dict) -> None:
        """Add the fused rows' blend-level cross-attention to the run's target maps."""
        chunk, heads = info["chunk"], extra["n_heads"]
        h, w = self.model.map_grid(extra)
        plan = self.fusion
        for r, role in enumerate(info["roles"]):
            if role == "cond":
                rows = slice(r * chunk, (r + 1) * chunk)
                maps = attention_probs(q[rows].float(), k[rows].float(), heads).mean(1).view(-1, h, w, k.shape[1])
                plan.target_maps = maps if plan.target_maps is None else plan.target_maps + maps

    def _blended_prediction(self, executor, x, timestep, model_options={}, seed=None):
        denoised = executor(x, timestep, model_options, seed)
        return self.latent_blend({"denoised": denoised, "input": x, "sigma": timestep, "model_options": model_options})

    def latent_blend(self, args: dict) -> torch.Tensor:
        """Post-CFG: make the DDIM (Euler) step land on the blended latent.

        The authors blend after the update: ``z = z_inv + M (z - z_inv)``, with ``z_inv`` the
        inverted latent at this step's UNet timestep (one step noisier than z, as in their
        code) and M the source mask of this step OR the target words' mask so far."""
        denoised, x = args["denoised"], args["input"]
        plan = self.fusion
        sigma = float(args["sigma"][0])
        k = edit_step(sigma, plan.store.sigmas)
        steps = plan.store.info.steps
        sample_sigmas = args["model_options"].get("transformer_options", {}).get("sample_sigmas")
        if k is None or k == 0 or k not in latent_blend_steps(steps) or sample_sigmas is None or plan.target_maps is None:
            return denoised
        pos = (sample_sigmas - sigma).abs().argmin()
        sigma_next = float(sample_sigmas[pos + 1])
        x_next = x + (sigma_next - sigma) * (x - denoised) / sigma  # what ComfyUI's ddim step will produce
        j = steps - 1 - k
        size = tuple(x.shape[-2:])
        src = threshold_mask(plan.blend.pooled[j].to(x), size, plan.blend.tau)
        tgt = threshold_mask(word_maps(plan.target_maps[None], plan.target_blend_positions)[0].to(x), size, plan.blend.tau)
        # both latents in z-space: x = z * sqrt(1 + sigma^2)
        scale_next = (1 + sigma_next ** 2) ** 0.5
        z_inv = plan.store.unet_inputs[steps - k].to(x) / (1 + float(plan.store.sigmas[steps - k + 1]) ** 2) ** 0.5
        z_next = blend_latents(x_next / scale_next, z_inv, src | tgt)
        # the denoised value whose Euler step from x reaches z_next * scale_next
        d = (z_next * scale_next - x) / (sigma_next - sigma)
        return x - d * sigma
