"""DDIM inversion (SD): deterministic DDIM from the clean latent to noise, recording each UNet
input so the edit can repeat the call (``edit/schedule.py`` has the schedule and its indices)."""
from __future__ import annotations

import math
from typing import Callable

import torch
from tqdm.auto import trange


@torch.no_grad()
def sample_ddim_inversion(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args=None,
                          callback=None, disable=None, record: Callable | None = None) -> torch.Tensor:
    """Deterministic DDIM from clean to noisy, as a k-diffusion style sampler.

    ``sigmas`` ascend (see ``inversion_sigmas``). ``model(x, sigma)`` returns the denoised
    prediction of ComfyUI's wrapped model. Call ``j`` feeds the latent at ``s_j`` to the
    UNet at timestep ``s_{j+1}``; ``record(j, x_in)`` receives that exact UNet input so the
    editing pass can repeat the call.
    """
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    # The clean latent is z_0 at alpha_bar(s_0): in x-space that is z_0 * sqrt(1 + s_0^2).
    x = x * math.sqrt(1.0 + float(sigmas[0]) ** 2)
    for j in trange(len(sigmas) - 1, disable=disable, desc="FateZero inversion"):
        s_from, s_to = float(sigmas[j]), float(sigmas[j + 1])
        # The same z at the destination's input scaling: x_in / sqrt(1 + s_to^2) == z_j.
        x_in = x * math.sqrt((1.0 + s_to ** 2) / (1.0 + s_from ** 2))
        if record is not None:
            record(j, x_in)
        denoised = model(x_in, s_to * s_in, **extra_args)
        eps = (x_in - denoised) / s_to
        x = x + (s_to - s_from) * eps
        if callback is not None:
            callback({"x": x, "i": j, "sigma": sigmas[j + 1], "sigma_hat": sigmas[j + 1], "denoised": denoised})
    return x
