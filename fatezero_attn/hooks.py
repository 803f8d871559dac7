"""Where the algorithm meets ComfyUI's sampling: ``FateZeroPatch`` wires one dispatcher per
patched MODEL (a ``ModelPatcher.clone()`` the node owns).

ComfyUI keeps one attention replace per site, so capture, fusion and spatio-temporal
attention go through one object. This module only wires it:
- the pack's replace on every attention site of the model (through the model seam,
  ``sd_unet.py``), composed with what other nodes put there (``composition.py``);
- ``set_model_unet_function_wrapper``: ``unet_wrapper`` labels the rows of each UNet call and,
  at fused steps, gets the source row's attention first (``source_call.py``);
- an ``OUTER_SAMPLE`` wrapper for frame windows (``window_sampling.py``), a ``PREDICT_NOISE``
  wrapper for the latent blend (``latent_blend.py``), ``ON_CLEANUP`` and ``ON_CLONE`` callbacks,
  and video-wide GroupNorm as object patches (``video_norm.py``).
What each attention call returns is ``dispatch.py``'s.

Why a separate source call rather than a source row inside ComfyUI's batch: every per-row
input ComfyUI computes for its rows (control residuals, ``c_concat``, ``y``, area and mask
conditioning, patches added after the fusion node) would otherwise have to be extended for a
row ComfyUI does not know about, and each new input kind would break it again. The cost of the
two is measured in the README ("Memory and time"), with its command.
"""
from __future__ import annotations

import torch

from . import model_state, temporal
from .capture import Capture, Recorder
from .composition import OtherPatches, own_replaces_per_clone
from .dispatch import RowDispatch
from .errors import FateZeroError
from .latent_blend import LatentBlend
from .plan import FusionPlan, call_info
from .sd_unet import SD_UNET
from .source_call import SourceCall, copy_options
from .video_norm import VideoBatch, set_video_group_norm
from .window_sampling import WindowGlue


class FateZeroPatch(RowDispatch, OtherPatches, SourceCall, Capture, LatentBlend, WindowGlue):
    """Spatio-temporal attention, inversion capture and fusion behind one dispatcher."""

    def __init__(self, temporal_mode: str = "per-frame", temporal_min_channels: int = 0,
                 video_groupnorm: bool = False, fusion: FusionPlan | None = None,
                 recorder: Recorder | None = None, node: str = "FateZero", window: int = 0,
                 window_recorders: list[Recorder] | None = None, model=SD_UNET, blend_choice: str = ""):
        """``window``: frames per window (sampled as sub-videos, ``windows.py``); a fusion plan's
        store sets it. ``window_recorders``: the inversion's recorder per window. ``model``: the
        model seam (``sd_unet.py``, ``wan_dit.py``); ``blend_choice``: the inversion's blend layers
        where the seam lets the user choose them (Wan's block range)."""
        temporal.source_frames(temporal_mode, 1)  # validates the mode
        self.temporal_mode = temporal_mode
        self.temporal_min_channels = temporal_min_channels
        self.video_groupnorm = video_groupnorm
        self.fusion = fusion
        self.recorder = recorder
        self.node = node
        self.model = model
        self.clip_plan = fusion  # windowed: self.fusion is the plan of the window being sampled
        self.window = window  # a fusion plan's store sets it at install
        self.window_recorders = window_recorders or []
        self.batch = VideoBatch()
        self.previous_wrapper = None
        self.sites: list = []
        self.blend_choice = blend_choice
        self.blend_layers = None  # the seam's blend layers (SD: a size ratio; Wan: block indices), set at install
        self.replaces: dict = {}  # (attn, site) -> the AttentionReplace installed there
        # (attn, site) -> another node's replace that was on the site at install; each call adds
        # those set since (composition.OtherPatches._other_patches_for_call)
        self.patches_at_install: dict = {}
        self.block_key_patches: set = set()  # found under the block key, which a later node may change
        self._calling_other_patch = False  # inside another node's replace, called from ours
        self._other_patch_called_ours = False  # that replace called ours inside itself
        self.source_options: dict = {}  # transformer_options the source pass runs with
        self.source_wrappers: dict = {}
        self.weight_state: dict | None = None
        self._checked_weights: object = None  # patches_uuid whose weights were found the fusion node's
        self._prepared_controls: list = []  # the source row's ControlNets readied this run
        # the inversion with two experts: (boundary, high-noise expert's ModelPatcher); calls at
        # sigma >= boundary run that expert's model (ComfyUI loads it as an additional model)
        self.high_noise_expert: tuple | None = None

    def __deepcopy__(self, memo):
        # ModelPatcher.clone() deep-copies model_options in 0.3.75; one patch object per install
        # (its per-run state is reset after each sampling, in _end_of_run).
        return self

    def install(self, model_patcher) -> None:
        """Put this patch on ``model_patcher`` (a clone the caller owns)."""
        import comfy.patcher_extension as ext
        dm = model_patcher.model.diffusion_model
        self.sites = self.model.sites(dm)
        self.blend_layers = self.model.blend_layers(dm, self.blend_choice)
        wrapper = model_patcher.model_options.get("model_function_wrapper")
        if isinstance(getattr(wrapper, "__self__", None), FateZeroPatch):
            under = wrapper.__self__
            if under.fusion is not None and self.fusion is None:
                raise FateZeroError(
                    f"{self.node}: the incoming MODEL comes from FateZero Attention Fusion, which already applies "
                    "spatio-temporal attention with the inversion's settings; connect this node before the "
                    "inversion and fusion nodes, or leave it out.")
            wrapper = under.previous_wrapper  # replace our own earlier patch, keep what was under it
        self.model.take_over(model_patcher, self)
        model_patcher.remove_callbacks_with_key(ext.CallbacksMP.ON_CLONE, "fatezero_replaces")
        model_patcher.add_callback_with_key(ext.CallbacksMP.ON_CLONE, "fatezero_replaces", own_replaces_per_clone)
        self.previous_wrapper = wrapper
        model_patcher.set_model_unet_function_wrapper(self.unet_wrapper)
        if self.fusion is not None:
            # after sampling: drop the last step's source q, k and the run's target maps
            model_patcher.add_callback(ext.CallbacksMP.ON_CLEANUP, self._end_of_run)
            if self.fusion.latent_blending:
                # around the whole prediction, so post-CFG patches added later (SAG, PAG) come first
                model_patcher.add_wrapper_with_key(ext.WrappersMP.PREDICT_NOISE, "fatezero_latent_blend",
                                                   self._blended_prediction)
        if self.clip_plan is not None:
            self.window = self.clip_plan.store.info.window  # the edit follows the inversion
        # an earlier FateZero patch's windows (Spatio-Temporal before the inversion) give way to this one's
        model_patcher.remove_wrappers_with_key(ext.WrappersMP.OUTER_SAMPLE, "fatezero_windows")
        if self.window:
            model_patcher.add_wrapper_with_key(ext.WrappersMP.OUTER_SAMPLE, "fatezero_windows", self._windowed_sample)
        set_video_group_norm(model_patcher, self.model.group_norm_names(dm), self.video_groupnorm, self.batch)
        # What the source pass runs with: this MODEL as the fusion node received it (the
        # inversion's, checked by the node), not patches added downstream.
        self.source_options = copy_options(model_patcher.model_options.get("transformer_options", {}))
        self.source_wrappers = copy_options(getattr(model_patcher, "wrappers", {}))
        self.weight_state = model_state.weight_state(model_patcher)

    def unet_wrapper(self, apply_model, args: dict) -> torch.Tensor:
        """Every UNet call: label its rows, run the source row first at fused steps, record the
        inversion's call, then run the call as ComfyUI built it."""
        x, t, c = args["input"], args["timestep"], dict(args["c"])
        cond_or_uncond = args["cond_or_uncond"]
        chunk = x.shape[0] // len(cond_or_uncond)
        roles = ["cond" if r == 0 else "uncond" for r in cond_or_uncond]
        opts = dict(c.get("transformer_options", {}))
        other_patches = self.model.prepare_call(self, opts)
        step, source, capture = None, None, None
        plan, rec = self.fusion, self.recorder
        if "multigpu_thread_device" in opts and (plan is not None or rec is not None):
            raise FateZeroError(f"{self.node}: ComfyUI is sampling on several GPUs at once; FateZero keeps one "
                                "source row per step and supports one device. Sample on one GPU.")
        if plan is not None and "cond" in roles:
            step = self._edit_step(float(t[0]), opts)
            roles = plan.target_roles(c.get("c_crossattn"), roles, chunk, step, self.node)
            if "cond" not in roles:
                step = None  # no row of this call is the target's: all plain
            elif step < plan.fused_steps:
                self._check_edit_rows(x, chunk, apply_model)
                source = self._source_attention(step, apply_model, args, opts)
            else:
                plan.source = None
        if rec is not None and rec.pending is not None and "cond" in roles:
            capture, rec.pending = rec.pending, None  # the sampler's own call of this step
            first = roles.index("cond")
            rec.record_call(c, slice(first * chunk, (first + 1) * chunk), x.shape[0], self.node)
        target = plan is not None and plan.latent_blending and step is not None and step != plan.target_step
        if target:
            if plan.target_step is None or step < plan.target_step:
                plan.target_maps = None  # a new run
            plan.target_step = step
        opts["fatezero"] = call_info(roles, chunk, step, source, other_patches, capture, target,
                                     self.model.call_layout(x, self))
        c["transformer_options"] = opts
        return self._call(apply_model, args, x, t, c, chunk)

    def _call(self, apply_model, args: dict, x, t, c: dict, chunk: int) -> torch.Tensor:
        self.batch.chunk = chunk if self.video_groupnorm else None
        if self.high_noise_expert is not None and float(t[0]) >= self.high_noise_expert[0]:
            apply_model = self.high_noise_expert[1].model.apply_model
        try:
            if self.previous_wrapper is not None:
                return self.previous_wrapper(apply_model, {**args, "input": x, "timestep": t, "c": c})
            return apply_model(x, t, **c)
        finally:
            self.batch.chunk = None

    def _end_of_run(self, *_) -> None:
        """``ON_CLEANUP``: per-run state goes (the last source q, k, the target maps)."""
        plan = self.fusion
        plan.source, plan.target_maps, plan.target_step, plan.target_seen_step = None, None, None, None
        for control in self._prepared_controls:  # as ComfyUI cleans up a sampler's controls
            control.cleanup()
        self._prepared_controls = []
