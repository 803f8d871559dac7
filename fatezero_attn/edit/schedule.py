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

import torch


def inversion_call(steps: int, step: int) -> int:
    """The inversion call whose UNet timestep edit step ``step`` starts at (the trajectory walked back)."""
    return steps - 1 - step


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


def nearest_edit_step(sigma: float, inv_sigmas: torch.Tensor) -> int:
    """The edit step whose start sigma is nearest ``sigma``: a sampler on its own schedule (the
    noised-source mode) takes its fractions and blend maps from that step."""
    return len(inv_sigmas) - 2 - int((inv_sigmas[1:] - sigma).abs().argmin())


def cross_replace_count(steps: int, cross_replace_steps: float) -> int:
    """Edit steps ``k`` below this fuse cross-attention (the authors' rounding, over N + 1)."""
    return int(cross_replace_steps * (steps + 1))


def replace_step_counts(steps: int, cross_replace_steps: float, self_replace_steps: float) -> tuple[int, int]:
    """Edit steps ``k`` below these counts fuse cross- and self-attention (the authors' rounding)."""
    return cross_replace_count(steps, cross_replace_steps), int(self_replace_steps * steps)
