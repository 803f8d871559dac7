"""The DDIM schedule shared by inversion and editing, in ComfyUI's sigma space.

ComfyUI's ``ddim`` sampler is DDIM (eta 0) written as Euler on
``x = z / sqrt(alpha_bar)``, ``sigma = sqrt((1 - alpha_bar) / alpha_bar)``. Inversion walks
the same sigmas upwards. Indices used throughout the pack:

- inversion sigmas ``[s_0, s_1, ..., s_N]`` ascending; ``s_0`` is where the clean latent
  sits (``alphas_cumprod[0]`` as in the authors' code, or 0), ``s_1..s_N`` are the
  ``ddim_uniform`` grid;
- UNet call ``j`` (0-based) of the inversion is evaluated at ``s_{j+1}`` (the step's
  destination, as the authors do) on the latent at ``s_j``;
- edit step ``k`` (0-based) starts at ``s_{N-k}``, the same UNet timestep as inversion
  call ``j = N - 1 - k``.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from tqdm.auto import trange


def inversion_sigmas(edit_sigmas: torch.Tensor, clean_sigma: float) -> torch.Tensor:
    """``[s_0, s_1..s_N]`` ascending, from ComfyUI's descending edit schedule ``[s_N..s_1, end]``."""
    grid = edit_sigmas[edit_sigmas > 0].flip(0)
    return torch.cat([grid.new_tensor([clean_sigma]), grid])


def edit_step(sigma: float, inv_sigmas: torch.Tensor, rel_tol: float = 1e-4) -> int | None:
    """Edit step ``k`` whose start sigma is ``sigma``, or None when the schedule has no such sigma."""
    n = len(inv_sigmas) - 1
    diffs = (inv_sigmas[1:] - sigma).abs()
    j = int(diffs.argmin())
    if diffs[j] > rel_tol * max(abs(sigma), 1e-6):
        return None
    return n - 1 - j


def cross_replace_count(steps: int, cross_replace_steps: float) -> int:
    """Edit steps ``k`` below this fuse cross-attention (the authors' rounding, over N + 1)."""
    return int(cross_replace_steps * (steps + 1))


def replace_step_counts(steps: int, cross_replace_steps: float, self_replace_steps: float) -> tuple[int, int]:
    """Edit steps ``k`` below these counts fuse cross- and self-attention (the authors' rounding)."""
    return cross_replace_count(steps, cross_replace_steps), int(self_replace_steps * steps)


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
