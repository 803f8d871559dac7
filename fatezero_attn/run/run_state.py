"""One sampling run's state (``RunState``): made where a run starts (the patch's ``OUTER_SAMPLE``
wrapper, one per window of a windowed run), handed to the parts in each call's ``CallInfo``, and
dropped when the run ends. The settings it runs with (``FusionPlan``) never change."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .plan import FusionPlan


class SourcePassDone(BaseException):  # not an Exception: another node's `except Exception` must not catch it
    """Raised by the source pass once it has what the edit needs: the rest of that model call is unused."""


@dataclass
class SourceAttention:
    """The source row's fused-site attention inputs at one edit step: ``(attn, site) -> (q, k)``
    (self-attention keys after the spatio-temporal gathering). ``by_block``: the source row walks
    beside the edit call (``source_blocks.py``), ``qk`` then holds one block's; ``entry``: its
    inputs to the first block, until a walk takes them."""
    step: int
    qk: dict = field(default_factory=dict)
    by_block: bool = False
    entry: dict | None = None
    last_site: tuple | None = None  # a walk's last fused site: the source row stops there
    sigma: float | None = None  # the sigma of the call it was made for (a noised source's steps are the sampler's)

    def ready(self, step: int, sigma: float) -> bool:
        """Whether a call of edit step ``step`` at ``sigma`` can use this (a walked source is used once)."""
        return self.step == step and self.sigma == sigma and not (self.by_block and self.entry is None)


@dataclass
class RunState:
    plan: FusionPlan | None = None       # the edit (the window's, in a windowed run); None: not an edit
    recorder: object | None = None       # the inversion's capture.Recorder (the window's); None: not an inversion
    # the latest edit step's source attention (a run needs one step's at a time)
    source: SourceAttention | None = None
    # fused sites in the order a source pass meets them: the pass stops after the last
    fused_layers: list | None = None
    # latent blend: the edit's own blend-level cross-attention summed over the steps so far
    target_maps: torch.Tensor | None = None
    target_step: int | None = None
    # the last edit step at which a positive chunk carried the target prompt
    target_seen_step: int | None = None
    # the sampler's ModelPatcher whose weights were found the fusion node's (checked once per run)
    checked_weights: object = None
    controls: list = field(default_factory=list)  # the source row's ControlNets readied in this run
    _cross_weights: dict = field(default_factory=dict, repr=False)

    def cross_weights(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The plan's cross-attention weights at edit step ``step``, computed once per step (one
        step's kept: Wan's are ``[512, 512]``, and a run has tens of steps)."""
        if step not in self._cross_weights:
            self._cross_weights = {step: self.plan.cross_weights(step)}
        return self._cross_weights[step]

    def sum_target_maps_at(self, step: int) -> bool:
        """Whether this call's target maps are added: once per edit step (a second call of the
        same step, PAG's or another prompt's, adds none)."""
        if step == self.target_step:
            return False
        self.target_step = step
        return True

    def add_target_maps(self, maps: torch.Tensor) -> None:
        self.target_maps = maps if self.target_maps is None else self.target_maps + maps

    def end(self) -> None:
        """Drop the run's tensors; clean up the controls it readied, as ComfyUI does a sampler's."""
        for control in self.controls:
            control.cleanup()
        self.controls, self.source, self.target_maps, self._cross_weights = [], None, None, {}
