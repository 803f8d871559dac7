"""Inversion for flow-matching models (Wan), in ComfyUI's sigma space.

ComfyUI samples a flow model (``CONST``) with ``x = (1 - sigma) * x0 + sigma * noise`` and a
velocity ``v = (x - denoised) / sigma``; Euler's step from ``s`` to ``s'`` is
``x' = x + (s' - s) * v(x, s)``. The edit walks the inversion's sigmas back down, and edit step
``k`` starts at ``s_{N-k}`` with one Euler step, so the inversion should produce, at every
``s_{j+1}``, the latent from which that Euler step lands on the latent at ``s_j``:
``x_j = x_{j+1} - (s_{j+1} - s_j) * v(x_{j+1}, s_{j+1})``, an implicit equation in ``x_{j+1}``.

- ``euler``: the explicit approximation ``x_{j+1} = x_j + (s_{j+1} - s_j) * v(x_j, s_{j+1})``,
  one model call per step (velocity taken at the step's destination sigma on the latent at its
  start, as the SD inversion does).
- ``fixed-point``: the implicit equation solved by fixed-point iteration,
  ``x_{j+1} <- x_j + (s_{j+1} - s_j) * v(x_{j+1}, s_{j+1})``, started from the previous step's
  velocity (``x_j + (s_{j+1} - s_j) * v_{j-1}``, no model call). ``iterations`` model calls per
  step (one more for the first step, which has no previous velocity): with one iteration it
  costs what ``euler`` costs. The tests and ``bench/`` measure the reconstruction of both.

Call ``j`` of the store is the last model call of step ``j``: its input (the latent it was
evaluated at, at ``s_{j+1}``) is recorded, and its attention captured, so the edit's source row
repeats it.
"""
from __future__ import annotations

from typing import Callable

import torch
from tqdm.auto import trange

METHODS = ("fixed-point", "euler")


@torch.no_grad()
def sample_flow_inversion(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args=None, callback=None,
                          disable=None, record: Callable | None = None, iterations: int = 0,
                          keep: Callable | None = None) -> torch.Tensor:
    """A k-diffusion style sampler from clean (``sigmas[0]``) to noise (``sigmas[-1]``, 1.0 for
    Wan). ``record(j, x_in)`` receives the input of step j's last model call; ``keep(x)`` the
    inverted latent, which ComfyUI's ``inverse_noise_scaling`` would divide by ``1 - sigma``
    (zero at sigma 1) on the way out."""
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])

    def velocity(x_in, sigma: float):
        return (x_in - model(x_in, sigma * s_in, **extra_args)) / sigma

    v_prev = None
    for j in trange(len(sigmas) - 1, disable=disable, desc="FateZero flow inversion"):
        s_from, s_to = float(sigmas[j]), float(sigmas[j + 1])
        h = s_to - s_from
        x_in = x
        if iterations > 0:
            if v_prev is None:  # the first step has no earlier velocity to start from
                v_prev = velocity(x, s_to)
            x_in = x + h * v_prev
            for _ in range(iterations - 1):
                x_in = x + h * velocity(x_in, s_to)
        if record is not None:
            record(j, x_in)
        v_prev = velocity(x_in, s_to)
        x = x + h * v_prev
        if callback is not None:
            callback({"x": x, "i": j, "sigma": sigmas[j + 1], "sigma_hat": sigmas[j + 1], "denoised": x_in - s_to * v_prev})
    if keep is not None:
        keep(x)
    return x


def flow_inversion_sigmas(edit_sigmas: torch.Tensor) -> torch.Tensor:
    """``[0, s_1 .. s_N]`` ascending from the sampler's descending ``[s_N .. s_1, 0]``."""
    grid = edit_sigmas[edit_sigmas > 0].flip(0)
    return torch.cat([grid.new_zeros(1), grid])


def noise_scale(model_sampling) -> float:
    """What a flow sampler multiplies its NOISE by at sigma 1, asked of ``model_sampling`` itself:
    1 in ComfyUI 0.3.75 (``sigma * noise + (1 - sigma) * latent``); ComfyUI 0.38's ``CONST``
    multiplies by its ``noise_scale`` (the ModelNoiseScale node, a model config's setting)."""
    unit = torch.ones(1, 1)
    return float(model_sampling.noise_scaling(torch.ones(1), unit, torch.zeros(1, 1)).reshape(-1)[0])


class InvertedNoise:
    """A NOISE for ``SamplerCustomAdvanced`` that starts the edit at the inverted latent.

    At sigma 1 a flow model's sampler starts from ``noise`` alone (``CONST.noise_scaling``:
    ``sigma * noise + (1 - sigma) * latent``, the noise times ``noise_scale`` first), so the
    inverted latent, divided by that scale, must come in as the noise; for an SD model it comes
    in as the latent image and the noise is zero."""

    def __init__(self, inverted: torch.Tensor | None, seed: int = 0):
        self.inverted, self.seed = inverted, seed

    def generate_noise(self, input_latent: dict) -> torch.Tensor:
        samples = input_latent["samples"]
        if self.inverted is None:
            return torch.zeros(samples.shape, dtype=samples.dtype, layout=samples.layout, device="cpu")
        if tuple(self.inverted.shape) != tuple(samples.shape):
            raise ValueError(f"FateZero inverted noise: the sampler's latent_image has shape {tuple(samples.shape)}, "
                             f"the inversion's {tuple(self.inverted.shape)}; connect the inversion's inverted_latent "
                             "as latent_image.")
        return self.inverted.clone()
