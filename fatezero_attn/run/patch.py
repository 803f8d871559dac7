"""Where the algorithm meets ComfyUI's sampling: ``FateZeroPatch`` installs the pack on one
patched MODEL (a ``ModelPatcher.clone()`` the node owns) and starts and ends its runs.

ComfyUI keeps one attention replace per site, so capture, fusion and spatio-temporal
attention go through one ``Dispatcher``. This module only wires:
- the family's attention seam (``families/``) routes every site to the dispatcher, composed
  with what other nodes put there (``composition.py``);
- ``set_model_unet_function_wrapper``: ``model_wrapper`` labels the rows of each model call in a
  ``CallInfo`` and, at fused steps, gets the source row's attention first (``source_row.py``; on
  a DiT the source row walks the blocks beside the call, ``source_blocks.py``);
- an ``OUTER_SAMPLE`` wrapper, always installed, starts a ``RunState`` per run (per window of a
  windowed run, ``window_sampling.py``) and ends it; a ``PREDICT_NOISE`` wrapper for the latent
  blend (``latent_blend.py``); an ``ON_CLONE`` callback; video-wide GroupNorm (``video_norm.py``).

Why a separate source call rather than a source row inside ComfyUI's batch: every per-row
input ComfyUI computes for its rows (control residuals, ``c_concat``, ``y``, area and mask
conditioning, patches added after the fusion node) would otherwise have to be extended for a
row ComfyUI does not know about, and each new input kind would break it again. The cost of the
two is measured in the README ("Memory and time"), with its command.
"""
from __future__ import annotations

import torch

from ..edit import temporal
from ..errors import FateZeroError
from . import window_sampling
from .call_info import CallInfo
from .capture import Recorder
from .composition import Composition, own_replaces_per_clone
from .dispatch import Dispatcher
from .latent_blend import blended_prediction
from .out_of_memory import fused_step_oom
from .plan import FusionPlan
from .run_state import RunState
from .source_blocks import SourceWalk, walks_by_block
from .source_row import SourceRow
from .start_image import check_edit
from .video_norm import VideoBatch, set_video_group_norm


class FateZeroPatch:
    """Spatio-temporal attention, inversion capture and fusion on one MODEL."""

    def __init__(self, family, temporal_mode: str = "per-frame", temporal_min_channels: int = 0,
                 video_groupnorm: bool = False, plan: FusionPlan | None = None, recorder: Recorder | None = None,
                 node: str = "FateZero", window: int = 0, window_recorders: list[Recorder] | None = None,
                 blend_choice: str = "", high_noise_expert: tuple | None = None):
        """``family``: the model family (``families/``); ``plan``: the edit's (fusion node);
        ``recorder``: the inversion's capture; ``window``: frames per window (sampled as
        sub-videos, ``video/windows.py``; an edit follows its store's); ``window_recorders``: the
        inversion's recorder per window; ``blend_choice``: the inversion's blend layers where the
        family lets the user choose them (Wan's block range); ``high_noise_expert``: the
        inversion with two experts, ``(boundary, the high-noise expert's ModelPatcher)``: calls at
        sigma >= boundary run that expert (ComfyUI loads it as an additional model)."""
        temporal.source_frames(temporal_mode, 1)  # validates the mode
        self.family, self.node = family, node
        self.temporal_mode, self.temporal_min_channels = temporal_mode, temporal_min_channels
        self.video_groupnorm = video_groupnorm
        self.plan, self.recorder = plan, recorder
        self.window = plan.store.info.window if plan is not None else window
        self.window_recorders = window_recorders or []
        self.blend_choice = blend_choice
        self.high_noise_expert = high_noise_expert
        self.batch = VideoBatch()
        self.previous_wrapper = None
        self.seam = self.dispatcher = self.source_row = None  # set at install, from the model
        self.run: RunState | None = None  # the run being sampled (RunState's docstring)

    def __deepcopy__(self, memo):
        # ModelPatcher.clone() deep-copies model_options in 0.3.75: clones share the patch (its
        # settings are fixed at install; each run has its own RunState).
        return self

    def install(self, model_patcher) -> None:
        """Put this patch on ``model_patcher`` (a clone the caller owns)."""
        import comfy.patcher_extension as ext
        dm = model_patcher.model.diffusion_model
        self.seam = self.family.seam(dm, self.blend_choice)
        wrapper = model_patcher.model_options.get("model_function_wrapper")
        if isinstance(getattr(wrapper, "__self__", None), FateZeroPatch):
            under = wrapper.__self__
            if under.plan is not None and self.plan is None:
                raise FateZeroError(
                    f"{self.node}: the incoming MODEL comes from FateZero Attention Fusion, which already applies "
                    "spatio-temporal attention with the inversion's settings; connect this node before the "
                    "inversion and fusion nodes, or leave it out.")
            wrapper = under.previous_wrapper  # replace our own earlier patch, keep what was under it
        composition = Composition(self.seam)
        patched = self.plan is not None or self.recorder is not None or bool(self.window_recorders)
        self.dispatcher = Dispatcher(self.seam, self.temporal_mode, self.temporal_min_channels, self.node,
                                     composition, patched)
        self.seam.take_over(model_patcher, self.dispatcher)
        model_patcher.remove_callbacks_with_key(ext.CallbacksMP.ON_CLONE, "fatezero_replaces")
        model_patcher.add_callback_with_key(ext.CallbacksMP.ON_CLONE, "fatezero_replaces", own_replaces_per_clone)
        self.previous_wrapper = wrapper
        model_patcher.set_model_unet_function_wrapper(self.model_wrapper)
        # an earlier FateZero patch's run wrapper (Spatio-Temporal before the inversion) gives way to this one's
        model_patcher.remove_wrappers_with_key(ext.WrappersMP.OUTER_SAMPLE, "fatezero_run")
        model_patcher.add_wrapper_with_key(ext.WrappersMP.OUTER_SAMPLE, "fatezero_run", self.sample_run)
        if self.plan is not None and self.plan.latent_blending:
            # around the whole prediction, so post-CFG patches added later (SAG, PAG) come first
            model_patcher.add_wrapper_with_key(ext.WrappersMP.PREDICT_NOISE, "fatezero_latent_blend",
                                               self.latent_blend_wrapper)
        set_video_group_norm(model_patcher, self.seam.group_norm_names(), self.video_groupnorm, self.batch)
        # What the source pass runs with: this MODEL as the fusion node received it (the
        # inversion's, checked by the node), with the pack installed, not patches added downstream.
        self.source_row = SourceRow.for_model(
            self.node, model_patcher, composition.patches_at_install, self.call_model,
            walks_by_block(self.seam, model_patcher.model_options.get("transformer_options", {})))

    # -- runs -------------------------------------------------------------------------------
    def sample_run(self, executor, noise, latent_image, *args, **kwargs):
        """``OUTER_SAMPLE``: one run (or one per window), its state made here and dropped at the end."""
        if self.plan is not None:  # an image-to-video edit's start image, as connected to the sampler
            # OUTER_SAMPLE's arguments after the latent: sampler, sigmas, denoise_mask, ...
            mask = args[2] if len(args) > 2 else kwargs.get("denoise_mask")
            check_edit(self.node, self.plan.store.info, getattr(executor, "class_obj", None), mask)
        if self.window:
            frames = self.plan.store.info.frames if self.plan is not None else latent_image.shape[0]
            subs = window_sampling.windows.sub_videos(frames, self.window, self.temporal_mode)
            if len(subs) > 1 or self.plan is not None:
                try:
                    return window_sampling.sample_windows(
                        executor, subs, self.node, self.start_window,
                        lambda k, latent: window_sampling.window_latent(self.plan, k, latent),
                        lambda k, out: window_sampling.finish_window(self.window_recorders, k, out),
                        noise, latent_image, *args, **kwargs)
                finally:
                    self.end_run()
        self.start_run(RunState(self.plan, self.recorder))
        try:
            return executor(noise, latent_image, *args, **kwargs)
        finally:
            self.end_run()

    def start_window(self, k: int) -> None:
        recorder = self.window_recorders[k] if self.window_recorders else self.recorder
        self.start_run(RunState(self.plan.for_window(k) if self.plan is not None else None, recorder))

    def start_run(self, run: RunState) -> None:
        self.end_run()
        self.run = run

    def end_run(self) -> None:
        if self.run is not None:
            self.run.end()
        self.run = None

    def current_run(self) -> RunState:
        """The run being sampled; a model call outside any sampler's run (a node calling the model
        directly) gets one that lasts until the next run starts."""
        if self.run is None:
            self.run = RunState(self.plan, self.recorder)
        return self.run

    # -- every model call -------------------------------------------------------------------
    def model_wrapper(self, apply_model, args: dict) -> torch.Tensor:
        """Every model call: label its rows, run the source row first at fused steps, record the
        inversion's call, then run the call as ComfyUI built it."""
        x, t, c = args["input"], args["timestep"], dict(args["c"])
        cond_or_uncond = args["cond_or_uncond"]
        chunk = x.shape[0] // len(cond_or_uncond)
        roles = ["cond" if r == 0 else "uncond" for r in cond_or_uncond]
        opts = dict(c.get("transformer_options", {}))
        other_patches = self.seam.prepare_call(opts, self.dispatcher)
        run = self.current_run()
        step, source, capture = None, None, None
        plan, rec = run.plan, run.recorder
        if "multigpu_thread_device" in opts and (plan is not None or rec is not None):
            raise FateZeroError(f"{self.node}: ComfyUI is sampling on several GPUs at once; FateZero keeps one "
                                "source row per step and supports one device. Sample on one GPU.")
        if plan is not None and "cond" in roles:
            step = self.source_row.edit_step(plan, float(t[0]), opts)
            roles = plan.target_roles(c.get("c_crossattn"), roles, chunk)
            if "cond" in roles:
                run.target_seen_step = step
            elif run.target_seen_step != step:
                raise plan.not_the_target(self.node)
            if "cond" not in roles:
                step = None  # no row of this call is the target's: all plain
            elif step < plan.fused_steps:
                self.source_row.check_edit_rows(run, x, chunk, apply_model)
                last_block = max(plan.fused_sites, default=-1) if self.source_row.by_block else -1
                by_block = self.source_row.by_block and self.seam.runs_own_blocks(opts, last_block)
                source = self.source_row.attention(run, step, apply_model, args, opts, by_block)
            else:
                run.source = None
        if rec is not None and rec.pending is not None and "cond" in roles:
            capture, rec.pending = rec.pending, None  # the sampler's own call of this step
            first = roles.index("cond")
            rec.record_call(c, slice(first * chunk, (first + 1) * chunk), x.shape[0], self.node)
        target = plan is not None and plan.latent_blending and step is not None and run.sum_target_maps_at(step)
        walk = None
        if source is not None and source.by_block:
            walk = SourceWalk(source, last_block, self.node, self.seam.label_block).around_block
        opts["fatezero"] = CallInfo(roles, chunk, run, step, source, other_patches, capture, target,
                                    self.seam.token_grid(x), walk)
        c["transformer_options"] = opts
        if source is None:
            return self.call_model(apply_model, args, x, t, c, chunk)
        try:
            return self.call_model(apply_model, args, x, t, c, chunk)
        except (torch.OutOfMemoryError, MemoryError) as e:
            raise fused_step_oom(e, self.node, opts["fatezero"], x.shape, self.family.blocks_by_index) from e

    def call_model(self, apply_model, args: dict, x, t, c: dict, chunk: int) -> torch.Tensor:
        """One model call as ComfyUI built it (under the wrapper that was there before ours)."""
        self.batch.chunk = chunk if self.video_groupnorm else None
        if self.high_noise_expert is not None and float(t[0]) >= self.high_noise_expert[0]:
            apply_model = self.high_noise_expert[1].model.apply_model
        try:
            if self.previous_wrapper is not None:
                return self.previous_wrapper(apply_model, {**args, "input": x, "timestep": t, "c": c})
            return apply_model(x, t, **c)
        finally:
            self.batch.chunk = None

    def latent_blend_wrapper(self, executor, x, timestep, model_options={}, seed=None):
        """``PREDICT_NOISE``: the latent blend of the run being sampled."""
        return blended_prediction(self.run, executor, x, timestep, model_options, seed)
