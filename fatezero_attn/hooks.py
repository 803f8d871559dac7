"""The one place the algorithm meets ComfyUI's UNet: a dispatcher per patched model.

ComfyUI keeps one attention-replace function per transformer block, so capture,
fusion and spatio-temporal attention go through one ``FateZeroPatch`` installed on a
``ModelPatcher.clone()``:
- ``unet_wrapper`` (``set_model_unet_function_wrapper``): knows the batch layout of each
  UNet call; while fusing it prepends the *source row* (the inversion's UNet input for
  this timestep with the source prompt), so every layer sees ``[source, cond, uncond]``
  chunks of ``frames`` rows, and drops that row from the output;
- ``attn1`` / ``attn2`` (attention replace on every transformer block): spatio-temporal
  keys and values, capture of the blend-level cross-attention during inversion, and
  fusion of the positive (cond) rows during editing; the negative rows stay plain;
- video-wide GroupNorm as object patches on the clone, restored by ComfyUI after sampling.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

import torch

import comfy.ldm.modules.attention as comfy_attention

from . import temporal
from .defaults import BLEND_LEVEL, FUSE_MAX_QUERY
from .fusion import attention_probs, cross_weights, fused_cross_attention, fused_self_attention
from .masks import BlendMask, blend_latents, latent_blend_window, threshold_mask, word_maps
from .schedule import edit_step
from .store import AttentionStore

log = logging.getLogger("FateZero")



class FateZeroError(ValueError):
    """A user-facing error: the message names the node, the input and the fix."""


def model_id(model_patcher) -> str:
    """A fingerprint of the UNet's weights (first and last layer) and its model type."""
    dm = model_patcher.model.diffusion_model
    h = hashlib.sha1(type(model_patcher.model.model_config).__name__.encode())
    for p in (dm.input_blocks[0][0].weight, dm.out[-1].weight):
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


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
    _weights: dict = field(default_factory=dict, repr=False)
    # per run: the edit's own blend-level cross-attention summed over the steps so far
    target_maps: torch.Tensor | None = field(default=None, repr=False)

    @property
    def latent_blending(self) -> bool:
        return self.blend is not None and self.blend.latent_blend

    def __post_init__(self):
        # read on every attention call: plain ints, computed once
        self.cross_steps = int(self.cross_windows.max())  # edit steps k < cross_steps fuse some token
        self.fused_steps = max(self.cross_steps, self.self_window)  # k < fused_steps need the source row

    def cross_weights(self, k: int):
        if k not in self._weights:
            active = (k < self.cross_windows).float()
            self._weights[k] = cross_weights(self.mapper, self.aligned, self.equalizer, active)
        return self._weights[k]


@dataclass
class Recorder:
    """Collects the inversion's UNet inputs and blend-level cross-attention maps."""
    inv_sigmas: torch.Tensor
    unet_inputs: dict = field(default_factory=dict)
    cross_sum: dict = field(default_factory=dict)
    cross_count: dict = field(default_factory=dict)

    def call_index(self, sigma: float) -> int:
        steps = len(self.inv_sigmas) - 1
        k = edit_step(sigma, self.inv_sigmas)
        if k is None:
            raise FateZeroError(f"inversion called the UNet at sigma {sigma}, not on its own schedule")
        return steps - 1 - k


class FateZeroPatch:
    """Spatio-temporal attention, inversion capture and fusion behind one dispatcher."""

    def __init__(self, temporal_mode: str = "per-frame", temporal_min_channels: int = 0,
                 video_groupnorm: bool = False, fusion: FusionPlan | None = None,
                 recorder: Recorder | None = None, node: str = "FateZero"):
        temporal.source_frames(temporal_mode, 1)  # validates the mode
        self.temporal_mode = temporal_mode
        self.temporal_min_channels = temporal_min_channels
        self.video_groupnorm = video_groupnorm
        self.fusion = fusion
        self.recorder = recorder
        self.node = node
        self.batch = VideoBatch()
        self.previous_wrapper = None

    def __deepcopy__(self, memo):
        # ModelPatcher.clone() deep-copies model_options; the patch is read-only while sampling.
        return self

    # -- installing ---------------------------------------------------------------------
    def install(self, model_patcher) -> None:
        """Put this patch on ``model_patcher`` (a clone the caller owns)."""
        dm = model_patcher.model.diffusion_model
        replace = model_patcher.model_options.get("transformer_options", {}).get("patches_replace", {})
        for key in attention_blocks(dm):
            for attn in ("attn1", "attn2"):
                existing = replace.get(attn, {}).get(key)
                if existing is not None and not isinstance(getattr(existing, "__self__", None), FateZeroPatch):
                    raise FateZeroError(
                        f"{self.node}: the incoming MODEL already has an attention patch on {attn} of block {key} "
                        "from another node; apply FateZero's nodes directly after the model loader (before other "
                        "attention patches such as IPAdapter or AnimateDiff).")
            model_patcher.set_model_attn1_replace(self.attn1, key[0], key[1], key[2])
            model_patcher.set_model_attn2_replace(self.attn2, key[0], key[1], key[2])
        wrapper = model_patcher.model_options.get("model_function_wrapper")
        if isinstance(getattr(wrapper, "__self__", None), FateZeroPatch):
            wrapper = wrapper.__self__.previous_wrapper  # replace our own earlier patch, keep what was under it
        self.previous_wrapper = wrapper
        model_patcher.set_model_unet_function_wrapper(self.unet_wrapper)
        if self.fusion is not None and self.fusion.latent_blending:
            model_patcher.set_model_sampler_post_cfg_function(self.latent_blend)
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

    # -- the UNet call --------------------------------------------------------------------
    def unet_wrapper(self, apply_model, args: dict) -> torch.Tensor:
        x, t, c = args["input"], args["timestep"], dict(args["c"])
        cond_or_uncond = args["cond_or_uncond"]
        chunk = x.shape[0] // len(cond_or_uncond)
        roles = ["cond" if r == 0 else "uncond" for r in cond_or_uncond]
        opts = dict(c.get("transformer_options", {}))
        step = None
        with_source = False
        if self.fusion is not None and "cond" in roles:
            step = self._edit_step(float(t[0]), opts)
            if step == 0:
                self.fusion.target_maps = None  # a new run
            if step < self.fusion.fused_steps:
                x, t, c = self._prepend_source(step, x, t, c, chunk)
                roles = ["source"] + roles
                with_source = True
        opts["fatezero"] = {"roles": roles, "chunk": chunk, "step": step}
        c["transformer_options"] = opts
        self.batch.chunk = chunk if self.video_groupnorm else None
        try:
            if self.previous_wrapper is not None:
                out = self.previous_wrapper(apply_model, {**args, "input": x, "timestep": t, "c": c})
            else:
                out = apply_model(x, t, **c)
        finally:
            self.batch.chunk = None
        return out[chunk:] if with_source else out

    def _edit_step(self, sigma: float, opts: dict) -> int:
        store = self.fusion.store
        k = edit_step(sigma, store.sigmas)
        if k is None:
            sample = opts.get("sample_sigmas")
            got = "" if sample is None else f" (the sampler's sigmas: {[round(float(s), 4) for s in sample]})"
            raise FateZeroError(
                f"{self.node}: the sampler's sigmas do not match the attention store's{got}. The store was "
                f"inverted with {store.info.steps} steps of ddim_uniform (sigmas "
                f"{[round(float(s), 4) for s in store.edit_sigmas]}); sample with KSamplerAdvanced, "
                f"sampler 'ddim', scheduler 'ddim_uniform', steps {store.info.steps}, add_noise 'disable', "
                "start_at_step 0, or feed the inversion's SIGMAS output to SamplerCustom.")
        return k

    def _prepend_source(self, step: int, x, t, c: dict, chunk: int):
        store = self.fusion.store
        j = store.info.steps - 1 - step
        src_x = store.unet_inputs[j].to(x)
        if src_x.shape != x[:chunk].shape:
            raise FateZeroError(
                f"{self.node}: the latent has {chunk} frames of {tuple(x.shape[-2:])}, the attention store "
                f"{store.info.frames} frames of {tuple(store.info.latent_hw)}; edit the same video the store was inverted from.")
        ctx = c["c_crossattn"]
        src_ctx = store.source_context.to(ctx)
        if src_ctx.shape[1:] != ctx.shape[1:]:
            raise FateZeroError(
                f"{self.node}: the target prompt's conditioning has {ctx.shape[1]} tokens, the source prompt's "
                f"{src_ctx.shape[1]}; keep both prompts within 75 tokens.")
        c["c_crossattn"] = torch.cat([src_ctx.expand(chunk, -1, -1), ctx])
        return torch.cat([src_x, x]), torch.cat([t[:chunk], t]), c

    # -- attention ------------------------------------------------------------------------
    @staticmethod
    def _attn(q, k, v, heads):
        return comfy_attention.optimized_attention(q, k, v, heads)

    def attn1(self, q, k, v, extra: dict) -> torch.Tensor:
        fz = self._call_info(q, extra)
        heads, chunk = extra["n_heads"], fz["chunk"]
        if self.temporal_mode != "per-frame" and q.shape[-1] >= self.temporal_min_channels:
            k = temporal.gather_frames(k, chunk, self.temporal_mode)
            v = temporal.gather_frames(v, chunk, self.temporal_mode)
        fusion, step = self.fusion, fz["step"]
        if not self._fusing(fz, q) or step >= fusion.self_window:
            return self._attn(q, k, v, heads)
        keep = None
        if fusion.blend is not None:
            _, _, h, w = extra["activations_shape"]
            keep = fusion.blend.keep_edit(fusion.store.info.steps - 1 - step, (h, w)).to(q.device)
        src = slice(0, chunk)
        return self._rows_by_role(q, k, v, heads, fz, cond_needs_plain=keep is not None, fuse_cond=lambda rows, plain:
                                  fused_self_attention(q[src], k[src], v[rows], heads, plain, keep, attn=self._attn))

    def attn2(self, q, k, v, extra: dict) -> torch.Tensor:
        fz = self._call_info(q, extra)
        heads, chunk = extra["n_heads"], fz["chunk"]
        fusion, step = self.fusion, fz["step"]
        if self._is_blend_level(extra):
            if self.recorder is not None:
                self._capture(q, k, heads, extra)
            if step is not None and fusion is not None and fusion.latent_blending:
                self._capture_target(q, k, heads, extra, fz)
        if not self._fusing(fz, q) or step >= fusion.cross_steps:
            return self._attn(q, k, v, heads)
        R, D = fusion.cross_weights(step)
        src = slice(0, chunk)
        return self._rows_by_role(q, k, v, heads, fz, cond_needs_plain=False, fuse_cond=lambda rows, _:
                                  fused_cross_attention(q[src], k[src], q[rows], k[rows], v[rows], R, D, heads,
                                                        attn=self._attn))

    @staticmethod
    def _call_info(q, extra: dict) -> dict:
        # Outside our wrapper (it is always installed, but be safe): no fusion, one chunk per branch.
        return extra.get("fatezero") or {"roles": [], "chunk": q.shape[0] // max(len(extra.get("cond_or_uncond", [0])), 1),
                                         "step": None}

    def _fusing(self, fz: dict, q) -> bool:
        """This call carries a source row and a positive row, at a layer the store covers."""
        return (self.fusion is not None and fz["step"] is not None and "source" in fz["roles"]
                and q.shape[1] <= self.fusion.max_query)

    def _rows_by_role(self, q, k, v, heads, fz, cond_needs_plain: bool, fuse_cond) -> torch.Tensor:
        """Plain attention for the source and negative rows (and the positive rows when the
        fusion needs them), the fused output for the positive rows."""
        chunk, roles = fz["chunk"], fz["roles"]
        cond = [r for r, role in enumerate(roles) if role == "cond"]
        plain = [r for r in range(len(roles)) if cond_needs_plain or r not in cond]
        out = q.new_empty(q.shape[0], q.shape[1], v.shape[-1])
        idx = torch.cat([torch.arange(r * chunk, (r + 1) * chunk, device=q.device) for r in plain])
        out[idx] = self._attn(q[idx], k[idx], v[idx], heads)
        for r in cond:
            rows = slice(r * chunk, (r + 1) * chunk)
            out[rows] = fuse_cond(rows, out[rows] if cond_needs_plain else None)
        return out

    @staticmethod
    def _is_blend_level(extra: dict) -> bool:
        latent_h = extra["original_shape"][2]
        h = extra["activations_shape"][2]
        return round(latent_h / h) == BLEND_LEVEL

    def _capture(self, q, k, heads, extra) -> None:
        rec = self.recorder
        j = rec.call_index(float(extra["sigmas"][0]))
        b, c, h, w = extra["activations_shape"]
        maps = attention_probs(q.float(), k.float(), heads).mean(1)  # [frames, h*w, 77]
        maps = maps.view(b, h, w, -1)
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
