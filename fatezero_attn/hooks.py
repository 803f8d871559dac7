"""The one place the algorithm meets ComfyUI's UNet: a dispatcher per patched model.

ComfyUI keeps one attention-replace function per transformer block, so capture,
fusion and spatio-temporal attention go through one ``FateZeroPatch`` installed on a
``ModelPatcher.clone()``:
- ``unet_wrapper`` (``set_model_unet_function_wrapper``): knows the batch layout of each
  UNet call. While fusing, before the call ComfyUI built (positive and negative rows,
  with everything the user wired: ControlNet residuals, ``c_concat``, ``y``, masks,
  several positives), it runs the *source row* as its own UNet call: the inversion's
  input for this timestep with the inversion's conditioning and patches. That pass keeps
  the q and k of the fused layers and stops after the last one; the edit call is left
  exactly as ComfyUI built it. A store in cache mode (``source_cache.py``) holds those q and k
  from the inversion itself, and the source row does not run.
- ``attn1`` / ``attn2`` (attention replace on every transformer block): spatio-temporal
  keys and values, capture of the blend-level cross-attention during inversion, and
  fusion of the positive (cond) rows during editing; the negative rows stay plain.
  An attention replace that another node put on the block (before or after FateZero's
  nodes) is composed, not dropped: rows FateZero does not change get that patch's output
  as without the pack; fused rows get the fused output plus that patch's change to the
  plain output.
- video-wide GroupNorm as object patches on the clone, restored by ComfyUI after sampling.
- with a window length, an ``OUTER_SAMPLE`` wrapper that samples the clip one sub-video at a
  time (``window_sampling.py``); before each window the patch takes that window's store,
  blend mask or recorder, so everything above sees an ordinary video.

Why a separate source call rather than a source row inside ComfyUI's batch: every
per-row input ComfyUI computes for its rows (control residuals, ``c_concat``, ``y``, area
and mask conditioning, patches added after the fusion node) would otherwise have to be
extended for a row ComfyUI does not know about, and each new input kind would break it
again. The cost of the two is measured in the README ("Memory and time"), with its command.
"""
from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field, replace

import torch

import comfy.ldm.modules.attention as comfy_attention

from . import model_state, temporal, windows
from .defaults import FUSE_MAX_QUERY
from .fusion import attention_probs, cross_weights, fused_cross_attention, fused_self_attention
from .masks import BlendMask, blend_latents, latent_blend_window, threshold_mask, word_maps
from .schedule import edit_step
from .source_cache import SourceCache
from .store import AttentionStore

log = logging.getLogger("FateZero")

# ComfyUI >= 0.3.6x reads an attention-backend override from ``transformer_options``.
_ATTN_TAKES_OPTIONS = any(p.kind is p.VAR_KEYWORD or p.name == "transformer_options"
                          for p in inspect.signature(comfy_attention.optimized_attention).parameters.values())


class FateZeroError(ValueError):
    """A user-facing error: the message names the node, the input and the fix."""


def attention_blocks(diffusion_model) -> list[tuple[str, int, int]]:
    """Every ``(block, number, transformer_index)`` with a transformer in the UNet."""
    keys = []
    for name, blocks in (("input", diffusion_model.input_blocks), ("middle", [diffusion_model.middle_block]),
                         ("output", diffusion_model.output_blocks)):
        for number, block in enumerate(blocks):
            for layer in block:
                if isinstance(layer, comfy_attention.SpatialTransformer):
                    keys += [(name, number, d) for d in range(len(layer.transformer_blocks))]
    return keys


def blend_factor(diffusion_model) -> int | None:
    """Latent size / blend-layer size: the deepest down level with transformers (defaults.py)."""
    from comfy.ldm.modules.diffusionmodules.openaimodel import Downsample
    factor, deepest = 1, None
    for block in diffusion_model.input_blocks:
        for layer in block:
            if isinstance(layer, Downsample):
                factor *= 2
            elif isinstance(layer, comfy_attention.SpatialTransformer):
                deepest = factor
    return deepest


# -- video-wide GroupNorm ----------------------------------------------------------------
class VideoBatch:
    """Rows per conditioning branch of the UNet call in flight (set by the wrapper)."""
    chunk: int | None = None


_video_norm_classes: dict[type, type] = {}


def video_group_norm(norm: torch.nn.Module, batch: VideoBatch) -> torch.nn.Module:
    """The same GroupNorm (same parameters) taking statistics over all frames of a branch."""
    base = type(norm)
    cls = _video_norm_classes.get(base)
    if cls is None:
        def forward(self, x):
            n = self._video_batch.chunk
            if not n or n == 1 or x.dim() != 4 or x.shape[0] % n:
                return base.forward(self, x)
            b, c, h, w = x.shape
            # [b, c, h, w] -> [branches, c, frames*h, w]: one statistic per group over the video
            video = x.view(b // n, n, c, h, w).transpose(1, 2).reshape(b // n, c, n * h, w)
            out = base.forward(self, video)
            return out.view(b // n, c, n, h, w).transpose(1, 2).reshape(b, c, h, w)
        cls = type(f"Video{base.__name__}", (base,), {"forward": forward})
        _video_norm_classes[base] = cls
    patched = cls.__new__(cls)
    patched.__dict__ = norm.__dict__.copy()  # shares the parameter dicts with the original
    patched._video_batch = batch
    return patched


def group_norm_names(diffusion_model) -> list[str]:
    """The two GroupNorms of every ResBlock and the output norm (not the transformers')."""
    from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock
    names = [f"diffusion_model.{n}.{part}" for n, m in diffusion_model.named_modules()
             if isinstance(m, ResBlock) for part in ("in_layers.0", "out_layers.0")]
    return names + ["diffusion_model.out.0"]


# -- what the edit needs at each step ----------------------------------------------------
@dataclass
class SourceAttention:
    """The source row's fused-layer attention inputs at one edit step: ``(attn, block) -> (q, k)``
    (self-attention keys after the spatio-temporal gathering)."""
    step: int
    qk: dict = field(default_factory=dict)


@dataclass
class FusionPlan:
    store: AttentionStore
    mapper: torch.Tensor           # S [77, 77]
    aligned: torch.Tensor          # [77]
    equalizer: torch.Tensor        # [77]
    cross_windows: torch.Tensor    # [77] edit steps k < window fuse cross-attention, per token
    self_window: int
    blend: BlendMask | None = None
    target_blend_positions: list[int] = field(default_factory=list)  # target tokens for latent blending
    max_query: int = FUSE_MAX_QUERY
    # the target prompt as the fusion node's CLIP encodes it ([tokens, width]); None: not checked
    target_context: torch.Tensor | None = field(default=None, repr=False)
    target_prompt: str = ""
    _weights: dict = field(default_factory=dict, repr=False)
    # per run: the edit's own blend-level cross-attention summed over the steps so far
    target_maps: torch.Tensor | None = field(default=None, repr=False)
    target_step: int | None = field(default=None, repr=False)
    # the latest step's source attention (one step is all a run needs at a time)
    source: SourceAttention | None = field(default=None, repr=False)
    # fused layers in the order a source pass meets them; the pass stops after the last
    fused_layers: list | None = field(default=None, repr=False)
    # per run: the last edit step at which a positive chunk carried the target prompt
    target_seen_step: int | None = field(default=None, repr=False)

    @property
    def latent_blending(self) -> bool:
        return self.blend is not None and self.blend.latent_blend

    def __post_init__(self):
        # read on every attention call: plain ints, computed once
        self.cross_steps = int(self.cross_windows.max())  # edit steps k < cross_steps fuse some token
        self.fused_steps = max(self.cross_steps, self.self_window)  # k < fused_steps need the source row

    def window(self, attn: str) -> int:
        return self.self_window if attn == "attn1" else self.cross_steps

    def is_target(self, context: torch.Tensor) -> bool:
        """Whether one row's ``c_crossattn`` ``[tokens, width]`` is the target prompt's (ComfyUI
        repeats a shorter context to the batch's common length)."""
        target = self.target_context
        n = context.shape[0] // target.shape[0]
        if context.shape[-1] != target.shape[-1] or n * target.shape[0] != context.shape[0]:
            return False
        ref = target.to(context).repeat(n, 1)
        return bool((context - ref).abs().max() <= 1e-3 * max(1.0, float(ref.abs().max())))

    def cross_weights(self, k: int):
        if k not in self._weights:
            active = (k < self.cross_windows).float()
            self._weights[k] = cross_weights(self.mapper, self.aligned, self.equalizer, active)
        return self._weights[k]


@dataclass
class Recorder:
    """Collects the inversion's UNet inputs, its per-row conditioning and the blend-level
    cross-attention maps. Only the sampler's own call of each step is recorded (guidance
    patches such as PAG call the UNet again at the same sigma)."""
    inv_sigmas: torch.Tensor
    unet_inputs: dict = field(default_factory=dict)
    cross_sum: dict = field(default_factory=dict)
    cross_count: dict = field(default_factory=dict)
    conds: dict | None = None         # per-row tensors of the inversion's call (c_crossattn, c_concat, y, ...)
    cache: SourceCache | None = None  # cache mode: the fused layers' q and k (source_cache.py)
    had_control: bool = False
    pending: int | None = None        # call j whose UNet input was just recorded
    inverted: torch.Tensor | None = None  # windowed: the sub-video's inverted latent (the sampler's output)

    def record_input(self, j: int, x_in: torch.Tensor) -> None:
        self.unet_inputs[j] = x_in.detach().to("cpu", torch.float32, copy=True)
        self.pending = j

    def record_call(self, c: dict, rows: slice, batch: int, node: str) -> None:
        """Keep the positive chunk's per-row inputs (``rows`` of the call's ``batch`` rows)."""
        conds = {k: _one_row_if_same(v[rows] if v.shape[0] == batch else v).detach().to("cpu", copy=True)
                 for k, v in c.items() if torch.is_tensor(v) and k not in ("transformer_options", "control")}
        self.had_control = self.had_control or c.get("control") is not None
        if self.conds is None:
            self.conds = conds
        elif conds.keys() != self.conds.keys() or any(not torch.equal(conds[k], self.conds[k]) for k in conds):
            raise FateZeroError(f"{node}: the source conditioning changed between inversion steps "
                                f"({sorted(conds)}); FateZero replays one conditioning at every step. Connect a "
                                "plain CLIPTextEncode (with the model's own extra inputs) as source_conditioning.")


def call_info(roles: list[str], chunk: int, step: int | None = None, source: SourceAttention | None = None,
              earlier: dict | None = None, capture: int | None = None, target: bool = False) -> dict:
    """What the wrapper tells the attention calls of one UNet call (``transformer_options["fatezero"]``):
    row roles (``source`` / ``cond`` / ``uncond`` chunks of ``chunk`` rows), the edit step, the
    source pass's q and k, other nodes' replaces per ``(attn, block)``, the inversion call
    to capture (or None) and whether to sum the target words' maps."""
    return {"roles": roles, "chunk": chunk, "step": step, "source": source, "earlier": earlier or {},
            "capture": capture, "target": target}


def _one_row_if_same(t: torch.Tensor) -> torch.Tensor:
    """``[frames, ...]`` -> ``[1, ...]`` when all rows are equal (the prompt's context is)."""
    return t[:1] if t.shape[0] > 1 and bool((t == t[:1]).all()) else t


class _SourcePassDone(BaseException):  # not an Exception: another node's `except Exception` must not catch it
    """Raised by the source pass after its last fused layer: the rest of that UNet call is unused."""


def _copy_options(value):
    """Dicts and lists copied, leaves shared (what ``ModelPatcher.clone`` does in 0.38)."""
    if isinstance(value, dict):
        return {k: _copy_options(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_options(v) for v in value]
    return value


class AttentionReplace:
    """What the pack installs on one attention site: its dispatcher, plus callbacks other packs
    chain onto it. IP-Adapter plus, InstantID and PuLID install through a helper that calls
    ``.add(callback, **kwargs)`` on whatever replace a key already holds; as in their own
    replace, each callback adds ``callback(out, q, k, v, extra_options, **kwargs)`` to the output
    while the sigma is within its ``sigma_start`` .. ``sigma_end``."""

    def __init__(self, patch: "FateZeroPatch", attn: str, callbacks=(), callback_kwargs=()):
        self._patch, self._attn = patch, attn
        self.callbacks, self.callback_kwargs = list(callbacks), list(callback_kwargs)

    def add(self, callback, **kwargs) -> None:
        self.callbacks.append(callback)
        self.callback_kwargs.append(kwargs)
        for name, value in kwargs.items():  # their helper exposes the latest settings as attributes
            if not name.startswith("_"):
                setattr(self, name, value)

    def copy(self) -> "AttentionReplace":
        return AttentionReplace(self._patch, self._attn, self.callbacks, self.callback_kwargs)

    def __deepcopy__(self, memo):
        # ModelPatcher.clone() in 0.3.75 deep-copies model_options: each clone gets its own callbacks
        return self.copy()

    def __call__(self, q, k, v, extra_options: dict, **_) -> torch.Tensor:
        out = self._patch._dispatch(self._attn, q, k, v, extra_options)
        if self.callbacks:
            sigma = float(extra_options["sigmas"][0]) if "sigmas" in extra_options else float("inf")
            for callback, kwargs in zip(self.callbacks, self.callback_kwargs):
                if kwargs.get("sigma_end", -float("inf")) <= sigma <= kwargs.get("sigma_start", float("inf")):
                    out = out + callback(out, q, k, v, extra_options, **kwargs)
        return out.to(q.dtype)


def _own_replaces_per_clone(_model_patcher, clone) -> None:
    """ON_CLONE: the clone gets copies of the pack's replaces, so a later ``.add`` on the clone
    (IP-Adapter's) stays off the MODEL it was cloned from (0.38's clone shares leaves)."""
    replace = clone.model_options.get("transformer_options", {}).get("patches_replace", {})
    for attn, table in replace.items():
        for key, fn in table.items():
            if isinstance(fn, AttentionReplace):
                table[key] = fn.copy()


class FateZeroPatch:
    """Spatio-temporal attention, inversion capture and fusion behind one dispatcher."""

    def __init__(self, temporal_mode: str = "per-frame", temporal_min_channels: int = 0,
                 video_groupnorm: bool = False, fusion: FusionPlan | None = None,
                 recorder: Recorder | None = None, node: str = "FateZero", window: int = 0,
                 window_recorders: list[Recorder] | None = None):
        """``window``: frames per window (sampled as sub-videos, ``windows.py``); a fusion plan's
        store sets it. ``window_recorders``: the inversion's recorder per window."""
        temporal.source_frames(temporal_mode, 1)  # validates the mode
        self.temporal_mode = temporal_mode
        self.temporal_min_channels = temporal_min_channels
        self.video_groupnorm = video_groupnorm
        self.fusion = fusion
        self.recorder = recorder
        self.node = node
        self.clip_plan = fusion  # windowed: self.fusion is the plan of the window being sampled
        self.window = window  # a fusion plan's store sets it at install
        self.window_recorders = window_recorders or []
        self.batch = VideoBatch()
        self.previous_wrapper = None
        self.keys: list[tuple[str, int, int]] = []
        self.blend_factor: int | None = 4  # set from the UNet at install
        # (attn, key) -> another node's replace that was on the block before this patch
        self.earlier: dict = {}
        self.earlier_from_block_key: set = set()  # found under the 2-tuple key, which a later node may change
        self.source_options: dict = {}  # transformer_options the source pass runs with
        self.source_wrappers: dict = {}
        self.weight_state: dict | None = None
        self._inside = False  # inside another node's patch that was called as "earlier"
        self._reentered = False  # that patch called the pack's replace inside itself
        self.replaces: dict = {}  # (attn, key) -> the AttentionReplace installed there
        self._prepared_controls: list = []  # the source row's ControlNets readied this run
        self._checked_weights: object = None  # patches_uuid whose weights were found the fusion node's

    def __deepcopy__(self, memo):
        # ModelPatcher.clone() deep-copies model_options in 0.3.75; the patch is read-only while sampling.
        return self

    # -- installing ---------------------------------------------------------------------
    def install(self, model_patcher) -> None:
        """Put this patch on ``model_patcher`` (a clone the caller owns)."""
        dm = model_patcher.model.diffusion_model
        self.keys = attention_blocks(dm)
        self.blend_factor = blend_factor(dm)
        wrapper = model_patcher.model_options.get("model_function_wrapper")
        if isinstance(getattr(wrapper, "__self__", None), FateZeroPatch):
            under = wrapper.__self__
            if under.fusion is not None and self.fusion is None:
                raise FateZeroError(
                    f"{self.node}: the incoming MODEL comes from FateZero Attention Fusion, which already applies "
                    "spatio-temporal attention with the inversion's settings; connect this node before the "
                    "inversion and fusion nodes, or leave it out.")
            wrapper = under.previous_wrapper  # replace our own earlier patch, keep what was under it
        replace = model_patcher.model_options.get("transformer_options", {}).get("patches_replace", {})
        for attn in ("attn1", "attn2"):
            table = replace.get(attn, {})
            for key in self.keys:
                existing = table.get(key)
                if existing is None and key[:2] in table:
                    existing = table[key[:2]]
                    self.earlier_from_block_key.add((attn, key))
                site = AttentionReplace(self, attn)
                if isinstance(existing, AttentionReplace):  # an earlier FateZero patch: take its place
                    owner = existing._patch
                    site = AttentionReplace(self, attn, existing.callbacks, existing.callback_kwargs)
                    existing = owner.earlier.get((attn, key))
                    if (attn, key) in owner.earlier_from_block_key:
                        self.earlier_from_block_key.add((attn, key))
                if existing is not None:
                    self.earlier[(attn, key)] = existing
                self.replaces[(attn, key)] = site
                install = model_patcher.set_model_attn1_replace if attn == "attn1" else model_patcher.set_model_attn2_replace
                install(site, *key)
        import comfy.patcher_extension as ext
        model_patcher.remove_callbacks_with_key(ext.CallbacksMP.ON_CLONE, "fatezero_replaces")
        model_patcher.add_callback_with_key(ext.CallbacksMP.ON_CLONE, "fatezero_replaces", _own_replaces_per_clone)
        self.previous_wrapper = wrapper
        model_patcher.set_model_unet_function_wrapper(self.unet_wrapper)
        if self.fusion is not None:
            import comfy.patcher_extension as ext
            # after sampling: drop the last step's source q, k and the run's target maps
            model_patcher.add_callback(ext.CallbacksMP.ON_CLEANUP, self._end_of_run)
            if self.fusion.latent_blending:
                # around the whole prediction, so post-CFG patches added later (SAG, PAG) come first
                model_patcher.add_wrapper_with_key(ext.WrappersMP.PREDICT_NOISE, "fatezero_latent_blend",
                                                   self._blended_prediction)
        if self.clip_plan is not None:
            self.window = self.clip_plan.store.info.window  # the edit follows the inversion
        import comfy.patcher_extension as ext
        # an earlier FateZero patch's windows (Spatio-Temporal before the inversion) give way to this one's
        model_patcher.remove_wrappers_with_key(ext.WrappersMP.OUTER_SAMPLE, "fatezero_windows")
        if self.window:
            model_patcher.add_wrapper_with_key(ext.WrappersMP.OUTER_SAMPLE, "fatezero_windows", self._windowed_sample)
        if self.video_groupnorm:
            for name in group_norm_names(dm):
                norm = model_patcher.get_model_object(name)
                if hasattr(norm, "_video_batch"):
                    norm = _video_norm_base(norm)
                model_patcher.add_object_patch(name, video_group_norm(norm, self.batch))
        else:
            for name in group_norm_names(dm):  # an earlier FateZero patch may have set them
                if hasattr(model_patcher.object_patches.get(name), "_video_batch"):
                    del model_patcher.object_patches[name]
        # What the source pass runs with: this MODEL as the fusion node received it (the
        # inversion's, checked by the node), not patches added downstream.
        self.source_options = _copy_options(model_patcher.model_options.get("transformer_options", {}))
        self.source_wrappers = _copy_options(getattr(model_patcher, "wrappers", {}))
        self.weight_state = model_state.weight_state(model_patcher)

    # -- windows --------------------------------------------------------------------------
    def _windowed_sample(self, executor, noise, latent_image, *args, **kwargs):
        from .window_sampling import sample_windows
        plan = self.clip_plan
        frames = plan.store.info.frames if plan is not None else latent_image.shape[0]
        subs = windows.sub_videos(frames, self.window, self.temporal_mode)
        if len(subs) == 1 and plan is None:
            return executor(noise, latent_image, *args, **kwargs)
        try:
            return sample_windows(executor, subs, self.node, self._start_window, self._window_latent,
                                  self._finish_window, noise, latent_image, *args, **kwargs)
        finally:
            self.fusion = plan

    def _start_window(self, k: int) -> None:
        if self.window_recorders:
            self.recorder = self.window_recorders[k]
        plan = self.clip_plan
        if plan is not None:
            store = plan.store.window_store(k)
            blend = plan.blend
            if blend is not None and plan.store.info.window:
                blend = blend.rows(plan.store.window_rows(k))
            self.fusion = replace(plan, store=store, blend=blend, target_maps=None, target_step=None, source=None,
                                  fused_layers=None, target_seen_step=None)

    def _window_latent(self, k: int, latent: torch.Tensor) -> torch.Tensor:
        """Window k starts from its own inverted anchor: the sub-video's, not the owner window's
        (they differ under video-wide GroupNorm), when the sampler starts from the inverted latent."""
        store = self.clip_plan.store if self.clip_plan is not None else None
        if store is None or store.anchor_latents is None:
            return latent
        subs = store.sub_videos()
        sub, owner = subs[k], windows.anchor_owner(subs)
        anchors = store.anchor_latents.to(latent)
        if sub.borrowed_anchor and torch.equal(latent[sub.anchor_row], anchors[owner]):
            latent = latent.clone()
            latent[sub.anchor_row] = anchors[k]
        return latent

    def _finish_window(self, k: int, out: torch.Tensor) -> None:
        if self.window_recorders:
            self.window_recorders[k].inverted = out.detach().to("cpu", torch.float32, copy=True)

    # -- the UNet call --------------------------------------------------------------------
    def unet_wrapper(self, apply_model, args: dict) -> torch.Tensor:
        x, t, c = args["input"], args["timestep"], dict(args["c"])
        cond_or_uncond = args["cond_or_uncond"]
        chunk = x.shape[0] // len(cond_or_uncond)
        roles = ["cond" if r == 0 else "uncond" for r in cond_or_uncond]
        opts = dict(c.get("transformer_options", {}))
        earlier = self._earlier_for_call(opts)
        step, source, capture = None, None, None
        plan, rec = self.fusion, self.recorder
        if "multigpu_thread_device" in opts and (plan is not None or rec is not None):
            raise FateZeroError(f"{self.node}: ComfyUI is sampling on several GPUs at once; FateZero keeps one "
                                "source row per step and supports one device. Sample on one GPU.")
        if plan is not None and "cond" in roles:
            step = self._edit_step(float(t[0]), opts)
            roles = self._target_roles(c.get("c_crossattn"), roles, chunk, step)
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
        opts["fatezero"] = call_info(roles, chunk, step, source, earlier, capture, target)
        c["transformer_options"] = opts
        return self._call(apply_model, args, x, t, c, chunk)

    def _target_roles(self, context, roles: list[str], chunk: int, step: int) -> list[str]:
        """Positive chunks whose prompt is not the fusion node's target prompt (other prompts
        combined into the positive) become ``other``: plain, as ComfyUI computes them."""
        plan = self.fusion
        if plan.target_context is None or context is None:
            return roles
        roles = [("cond" if plan.is_target(context[r * chunk]) else "other") if role == "cond" else role
                 for r, role in enumerate(roles)]
        if "cond" in roles:
            plan.target_seen_step = step
        elif plan.target_seen_step != step:
            raise FateZeroError(
                f"{self.node}: the sampler's positive conditioning is not the text in {self.node}'s 'target_prompt' "
                f"('{plan.target_prompt}'), so the source words would be mapped onto other tokens. Connect a "
                f"CLIPTextEncode of exactly that text (with the CLIP connected to {self.node}) to the sampler's "
                f"positive, or type the positive's text into {self.node}'s 'target_prompt'. On the sampler node: "
                "positive = that CLIPTextEncode (combined with other prompts if you like: only the target's rows "
                "are fused).")
        return roles

    def _call(self, apply_model, args: dict, x, t, c: dict, chunk: int) -> torch.Tensor:
        self.batch.chunk = chunk if self.video_groupnorm else None
        try:
            if self.previous_wrapper is not None:
                return self.previous_wrapper(apply_model, {**args, "input": x, "timestep": t, "c": c})
            return apply_model(x, t, **c)
        finally:
            self.batch.chunk = None

    def _earlier_for_call(self, opts: dict) -> dict:
        """Other nodes' replaces for this call: those found at install, and those set since
        (on the fusion node's output MODEL, or per call as PAG does). Ours stays installed."""
        earlier = dict(self.earlier)
        replace = opts.get("patches_replace")
        if not replace:
            return earlier
        restored = None
        for attn in ("attn1", "attn2"):
            table = replace.get(attn, {})
            for key in self.keys:
                fn = table.get(key)
                if fn is not None and not (isinstance(fn, AttentionReplace) and fn._patch is self):
                    earlier[(attn, key)] = fn  # set after this patch on the same block: compose it
                    restored = restored or {a: dict(tb) for a, tb in replace.items()}
                    restored[attn][key] = self.replaces[(attn, key)]
                elif (attn, key) in self.earlier_from_block_key or (attn, key) not in self.earlier:
                    block_fn = table.get(key[:2])
                    if block_fn is not None:
                        earlier[(attn, key)] = block_fn
        if restored is not None:
            opts["patches_replace"] = restored
        return earlier

    def _check_edit_rows(self, x, chunk: int, apply_model) -> None:
        info = self.fusion.store.info
        if chunk != info.frames or tuple(x.shape[-2:]) != tuple(info.latent_hw):
            raise FateZeroError(
                f"{self.node}: the sampler's positive rows have {chunk} frames of {tuple(x.shape[-2:])}, the "
                f"attention store {info.frames} frames of {tuple(info.latent_hw)}. Edit the same video the store "
                "was inverted from, and condition the positive on whole frames (ConditioningSetMask with "
                "set_cond_area 'default', not an area). On the sampler node: use the inverted latent as latent_image.")
        patcher = getattr(getattr(apply_model, "__self__", None), "current_patcher", None)
        if patcher is not None and self.weight_state is not None:
            if getattr(patcher, "current_hooks", None) is not None:
                raise FateZeroError(
                    f"{self.node}: the sampler's conditioning carries hooks (hooked LoRA or keyframes) that patch "
                    "the model while the source row runs, so it would no longer repeat the inversion. Use LoraLoader "
                    "on the MODEL of both FateZero nodes instead. On the sampler node: connect conditioning "
                    "without hooks.")
            stamp = (id(patcher), getattr(patcher, "patches_uuid", None), len(patcher.object_patches))
            if stamp == self._checked_weights:
                return
            now = model_state.weight_state(patcher)
            if now != self.weight_state:
                diff = "; ".join(model_state.differences(self.weight_state, now)).replace("at inversion", "at the fusion node")
                raise FateZeroError(
                    f"{self.node}: a node between FateZero Attention Fusion and the sampler changed the model "
                    f"({diff}), so the source row would no longer repeat the inversion. Apply LoRAs and model "
                    "patches before the inversion and the fusion node (to the MODEL both receive). On the sampler "
                    "node: connect the fusion node's MODEL output directly.")
            self._checked_weights = stamp

    def _source_attention(self, step: int, apply_model, args: dict, call_opts: dict) -> SourceAttention:
        """The fused layers' q, k of the inversion's call ``N-1-step``: from the store's source cache
        when it holds that call, else by running the source row alone."""
        plan = self.fusion
        if plan.source is not None and plan.source.step == step:
            return plan.source  # a second call of the same step (several conds, PAG, ...)
        plan.source = None  # free the previous step's tensors first
        store = plan.store
        j = store.info.steps - 1 - step
        x = args["input"]
        if store.cached(step):  # cache mode: the inversion kept this call's tensors
            plan.source = SourceAttention(step, store.cache.read(j, x.device))
            if plan.fused_layers is None:  # in the order a source pass meets them, for later uncached steps
                plan.fused_layers = list(plan.source.qk)
            return plan.source
        src_x = store.unet_inputs[j].to(x)
        t = torch.full((store.info.frames,), float(store.sigmas[j + 1]), device=x.device)  # the inversion's sigma
        c = store.source_inputs(x.device)
        control = store.extra.get("source_control")  # the inversion's ControlNet / T2I-Adapter, if any
        # per-call entries (sigmas, ...) from this call; patches only from the fusion node's MODEL
        opts = {k: v for k, v in call_opts.items() if k not in ("patches", "patches_replace")}
        opts.update(_copy_options(self.source_options), wrappers=_copy_options(self.source_wrappers),
                    cond_or_uncond=[0], uuids=["fatezero-source"], sample_sigmas=store.sigmas.to(x.device))
        source = SourceAttention(step)
        opts["fatezero"] = call_info(["source"], store.info.frames, step, source, dict(self.earlier))
        c["transformer_options"] = opts
        if control is not None:
            c["control"] = self._source_control(control, apply_model).get_control(src_x, t, c, 1, opts)
        try:
            self._call(apply_model, {**args, "cond_or_uncond": [0]}, src_x, t, c, store.info.frames)
            if plan.fused_layers is None:
                plan.fused_layers = list(source.qk)
        except _SourcePassDone:
            pass
        plan.source = source
        return source

    def _source_control(self, control, apply_model):
        """The inversion's control, readied once per run as ComfyUI readies a sampler's: model
        sampling set, its models loaded (they may have been offloaded since the last run), and
        cleaned up when the run ends."""
        if not any(c is control for c in self._prepared_controls):
            import comfy.model_management
            model = apply_model.__self__
            control.pre_run(model, lambda percent: model.model_sampling.percent_to_sigma(percent))
            comfy.model_management.load_models_gpu(control.get_models())
            self._prepared_controls.append(control)
        return control

    def _edit_step(self, sigma: float, opts: dict) -> int:
        store = self.fusion.store
        k = edit_step(sigma, store.sigmas)
        if k is None:
            summary = lambda s: f"{len(s)} steps, sigma {float(s[0]):.4g} to {float(s[-1]):.4g}"
            sample = opts.get("sample_sigmas")
            got = "" if sample is None else f"; the sampler's: {summary(sample[sample > 0])}"
            steps = store.info.steps_input or store.info.steps
            raise FateZeroError(
                f"{self.node}: the sampler's sigmas do not match the attention store's (the store's: ddim_uniform, "
                f"{summary(store.edit_sigmas)}{got}). On the sampler node: steps {steps} (the "
                f"inversion's steps input), sampler 'ddim', scheduler 'ddim_uniform', add_noise 'disable', "
                "start_at_step 0; or feed the inversion's edit_sigmas output to SamplerCustom.")
        return k

    # -- attention ------------------------------------------------------------------------
    @staticmethod
    def _plain(q, k, v, heads: int, extra: dict) -> torch.Tensor:
        precision = extra.get("attn_precision")  # what the layer itself would ask for
        if _ATTN_TAKES_OPTIONS:  # respects a user's attention-backend override
            return comfy_attention.optimized_attention(q, k, v, heads, attn_precision=precision,
                                                       transformer_options=extra)
        return comfy_attention.optimized_attention(q, k, v, heads, attn_precision=precision)

    def attn1(self, q, k, v, extra: dict, **_) -> torch.Tensor:
        return self._dispatch("attn1", q, k, v, extra)

    def attn2(self, q, k, v, extra: dict, **_) -> torch.Tensor:
        return self._dispatch("attn2", q, k, v, extra)

    def _dispatch(self, attn: str, q, k, v, extra: dict) -> torch.Tensor:
        fz = self._call_info(q, extra)
        key = (*extra["block"], extra.get("block_index", 0)) if extra.get("block") else None
        if self._inside:  # another node's patch (composed below) calls ours inside itself
            self._reentered = True
            return self._dispatch_rows(attn, q, k, v, extra, fz, key, None)
        other = fz["earlier"].get((attn, key))
        if other is None:
            return self._dispatch_rows(attn, q, k, v, extra, fz, key, None)
        self._inside, self._reentered = True, False
        try:
            other_out = other(q, k, v, extra)
        finally:
            self._inside = False
        if self._reentered:  # it wraps ours: its output already holds ours, composed as that patch chose
            return other_out
        return self._dispatch_rows(attn, q, k, v, extra, fz, key, other_out)

    def _dispatch_rows(self, attn: str, q, k, v, extra: dict, fz: dict, key, earlier) -> torch.Tensor:
        """``earlier``: the output of another node's replace on this site for all rows, or None."""
        heads, chunk, step = extra["n_heads"], fz["chunk"], fz["step"]
        gathered = temporal.gathers(attn, self.temporal_mode, q.shape[-1], self.temporal_min_channels)
        kt = temporal.gather_frames(k, chunk, self.temporal_mode) if gathered else k
        vt = temporal.gather_frames(v, chunk, self.temporal_mode) if gathered else v
        plan = self.fusion
        fusable = plan is not None and step is not None and q.shape[1] <= plan.max_query
        if attn == "attn2" and (fz["capture"] is not None or fz["target"]) and self._is_blend_level(extra):
            if fz["capture"] is not None:  # the first positive chunk (a guidance patch may add negative rows)
                first = fz["roles"].index("cond") * chunk
                self._capture(fz["capture"], q[first:first + chunk], k[first:first + chunk], heads, extra)
            if fz["target"]:
                self._capture_target(q, k, heads, extra, fz)
        rec = self.recorder
        if fz["capture"] is not None and rec.cache is not None and rec.cache.holds(fz["capture"], q.shape[1]):
            first = fz["roles"].index("cond") * chunk
            rec.cache.keep(fz["capture"], attn, key, q[first:first + chunk], k[first:first + chunk])
        if fz["roles"] == ["source"]:
            return self._source_layer(attn, key, q, k, v, kt, vt, earlier, gathered, extra)
        cond = [r for r, role in enumerate(fz["roles"]) if role == "cond"]
        if not (fusable and cond and fz["source"] is not None and step < plan.window(attn)):
            return self._unfused(q, k, v, kt, vt, heads, earlier, gathered, extra)
        q_src, k_src = fz["source"].qk.get((attn, key), (None, None))
        if q_src is not None:  # a cache read from a file may hold another dtype (fp32 from a CPU inversion)
            q_src, k_src = q_src.to(q), k_src.to(q)
        if q_src is None or q_src.shape[1] != q.shape[1]:
            raise FateZeroError(
                f"{self.node}: at {attn} of block {key} the edit has {q.shape[1]} query positions and the source row "
                f"{'none' if q_src is None else q_src.shape[1]}: a node applied after {self.node} changes the UNet's "
                "resolution inside the model (e.g. Kohya Deep Shrink, token merging). Apply it before the inversion "
                f"and {self.node}, or leave it out. On the sampler node: connect {self.node}'s MODEL output.")
        attend = lambda q_, k_, v_, h_: self._plain(q_, k_, v_, h_, extra)
        keep = None
        if attn == "attn1":
            if plan.blend is not None:
                _, _, h, w = extra["activations_shape"]
                keep = plan.blend.keep_edit(plan.store.info.steps - 1 - step, (h, w)).to(q.device)
            fuse = lambda rows, plain: fused_self_attention(q_src, k_src, vt[rows], heads, plain, keep, attn=attend)
        else:
            R, D = plan.cross_weights(step)
            fuse = lambda rows, plain: fused_cross_attention(q_src, k_src, q[rows], k[rows], v[rows], R, D, heads,
                                                             attn=attend)
        if earlier is None and keep is None:
            # plain attention only for the rows that are not fused
            out = q.new_empty(q.shape[0], q.shape[1], v.shape[-1])
            others = [r for r in range(len(fz["roles"])) if r not in cond]
            if others:
                idx = torch.cat([torch.arange(r * chunk, (r + 1) * chunk, device=q.device) for r in others])
                out[idx] = self._plain(q[idx], kt[idx], vt[idx], heads, extra)
            for r in cond:
                rows = slice(r * chunk, (r + 1) * chunk)
                out[rows] = fuse(rows, None)
            return out
        out = self._unfused(q, k, v, kt, vt, heads, earlier, gathered, extra)
        if out is earlier:  # the other patch's tensor (PAG returns its v): fused rows go into a copy
            out = out.clone()
        for r in cond:
            rows = slice(r * chunk, (r + 1) * chunk)
            if earlier is None:
                out[rows] = fuse(rows, out[rows])
            else:  # the fused output plus the other patch's change to the plain output
                plain = self._plain(q[rows], kt[rows], vt[rows], heads, extra)
                out[rows] = fuse(rows, plain) + (out[rows] - plain)
        return out

    def _unfused(self, q, k, v, kt, vt, heads, earlier, gathered: bool, extra: dict) -> torch.Tensor:
        """What the rows get without fusion: the other node's patch as without the pack (``earlier``,
        its output); with spatio-temporal keys at this layer, that patch's change added to the
        spatio-temporal output."""
        if earlier is None:
            return self._plain(q, kt, vt, heads, extra)
        out = earlier
        if gathered:
            out = out - self._plain(q, k, v, heads, extra) + self._plain(q, kt, vt, heads, extra)
        return out

    def _source_layer(self, attn: str, key, q, k, v, kt, vt, earlier, gathered: bool, extra: dict):
        """The source pass: keep what the fused kernels consume; stop after the last fused layer."""
        fz, plan = extra["fatezero"], self.fusion
        if q.shape[1] <= plan.max_query:
            fz["source"].qk[(attn, key)] = (q, kt if attn == "attn1" else k)
            if plan.fused_layers and (attn, key) == plan.fused_layers[-1]:
                raise _SourcePassDone
        return self._unfused(q, k, v, kt, vt, extra["n_heads"], earlier, gathered, extra)

    def _call_info(self, q, extra: dict) -> dict:
        fz = extra.get("fatezero")
        if fz is not None:
            return fz
        if self.fusion is not None or self.recorder is not None:
            raise FateZeroError(
                f"{self.node}: the UNet ran without FateZero's model wrapper: a node applied after {self.node} "
                "replaced it (set_model_unet_function_wrapper), which would silently turn the edit off. Apply that "
                f"node before the inversion and {self.node}. On the sampler node: connect {self.node}'s MODEL output "
                "(or a node that keeps its wrapper).")
        # spatio-temporal only, under another node's wrapper: one chunk per branch
        return call_info([], q.shape[0] // max(len(extra.get("cond_or_uncond", [0])), 1), earlier=self.earlier)

    def _is_blend_level(self, extra: dict) -> bool:
        """A blend layer: at the deepest down level's resolution, in a down or up block."""
        latent_h = extra["original_shape"][2]
        h = extra["activations_shape"][2]
        return extra.get("block", ("",))[0] != "middle" and round(latent_h / h) == self.blend_factor

    def _capture(self, j: int, q, k, heads, extra) -> None:
        rec = self.recorder
        h, w = extra["activations_shape"][2:]
        maps = attention_probs(q.float(), k.float(), heads).mean(1)  # [frames, h*w, 77]
        maps = maps.view(q.shape[0], h, w, -1)
        if j in rec.cross_sum:
            rec.cross_sum[j] += maps
            rec.cross_count[j] += 1
        else:
            rec.cross_sum[j] = maps
            rec.cross_count[j] = 1

    def _capture_target(self, q, k, heads, extra, fz) -> None:
        """Sum the positive rows' blend-level cross-attention over layers and steps."""
        chunk = fz["chunk"]
        b, c, h, w = extra["activations_shape"]
        for r, role in enumerate(fz["roles"]):
            if role == "cond":
                rows = slice(r * chunk, (r + 1) * chunk)
                maps = attention_probs(q[rows].float(), k[rows].float(), heads).mean(1).view(chunk, h, w, -1)
                plan = self.fusion
                plan.target_maps = maps if plan.target_maps is None else plan.target_maps + maps

    def _end_of_run(self, *_) -> None:
        plan = self.fusion
        plan.source, plan.target_maps, plan.target_step, plan.target_seen_step = None, None, None, None
        for control in self._prepared_controls:  # as ComfyUI cleans up a sampler's controls
            control.cleanup()
        self._prepared_controls = []

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
        if k is None or k == 0 or k not in latent_blend_window(steps) or sample_sigmas is None or plan.target_maps is None:
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


def _video_norm_base(norm: torch.nn.Module) -> torch.nn.Module:
    """The plain GroupNorm under a video-wide one (to re-patch without stacking)."""
    base = type(norm).__mro__[1]
    plain = base.__new__(base)
    plain.__dict__ = {k: v for k, v in norm.__dict__.items() if k != "_video_batch"}
    return plain
