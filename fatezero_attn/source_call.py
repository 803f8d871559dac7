"""The source row as its own UNet call (FateZero's inversion-time attention, recomputed).

At a fused edit step the model wrapper runs, before the call ComfyUI built, the inversion's
UNet call of that timestep: its input latent, sigma, conditioning (and ControlNet) and the
patches of the fusion node's MODEL. That pass keeps the q and k of the fused layers and stops
after the last one (``SourcePassDone``). A store in cache mode (``source_cache.py``) holds
those q and k from the inversion itself, and the pass does not run. Mixed into ``FateZeroPatch``.
"""
from __future__ import annotations

import torch

from . import model_state
from .errors import FateZeroError
from .plan import SourceAttention, call_info
from .schedule import edit_step


class SourcePassDone(BaseException):  # not an Exception: another node's `except Exception` must not catch it
    """Raised by the source pass after its last fused layer: the rest of that UNet call is unused."""


def copy_options(value):
    """Dicts and lists copied, leaves shared (what ``ModelPatcher.clone`` does in 0.38)."""
    if isinstance(value, dict):
        return {k: copy_options(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_options(v) for v in value]
    return value


class SourceCall:
    """The edit step of a call, the checks on the edit rows, and the source row's q and k."""

    def _check_edit_rows(self, x, chunk: int, apply_model) -> None:
        info = self.fusion.store.info
        video = (info.latent_frames,) if info.latent_frames else ()  # a video model's row: [C, T, h, w]
        if (chunk, *x.shape[2:]) != (info.frames, *video, *info.latent_hw):
            what = lambda rows, shape: (f"{rows} frames of {tuple(shape[-2:])}" if not video else
                                        f"{shape[0]} latent frames of {tuple(shape[-2:])}")
            raise FateZeroError(
                f"{self.node}: the sampler's positive rows have {what(chunk, tuple(x.shape[2:]))}, the attention store "
                f"{what(info.frames, (*video, *info.latent_hw))}. Edit the same video the store was inverted from, and "
                "condition the positive on whole frames (ConditioningSetMask with set_cond_area 'default', not an "
                "area). On the sampler node: use the inverted latent as latent_image.")
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
        opts.update(copy_options(self.source_options), wrappers=copy_options(self.source_wrappers),
                    cond_or_uncond=[0], uuids=["fatezero-source"], sample_sigmas=store.sigmas.to(x.device))
        source = SourceAttention(step)
        opts["fatezero"] = call_info(["source"], store.info.frames, step, source, dict(self.patches_at_install))
        c["transformer_options"] = opts
        if control is not None:
            c["control"] = self._source_control(control, apply_model).get_control(src_x, t, c, 1, opts)
        try:
            self._call(apply_model, {**args, "cond_or_uncond": [0]}, src_x, t, c, store.info.frames)
            if plan.fused_layers is None:
                plan.fused_layers = list(source.qk)
        except SourcePassDone:
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
        store, expert = self.fusion.store, self.fusion.expert
        k = edit_step(sigma, store.sigmas)
        if k is not None and expert is not None and (sigma >= store.info.expert_boundary) != (expert == "high"):
            side = "high" if expert == "low" else "low"
            raise FateZeroError(
                f"{self.node}: this step (sigma {sigma:.4g}) is on the {side}-noise expert's side of the boundary "
                f"{store.info.expert_boundary:g}, and this MODEL is the attention store's {expert}-noise expert. "
                f"Connect the {side}-noise expert's fused MODEL to this sampler, and split the sigmas at the "
                "inversion's expert_split_step (SplitSigmas).")
        if k is None:
            summary = lambda s: f"{len(s)} steps, sigma {float(s[0]):.4g} to {float(s[-1]):.4g}"
            sample = opts.get("sample_sigmas")
            got = "" if sample is None else f"; the sampler's: {summary(sample[sample > 0])}"
            steps = store.info.steps_input or store.info.steps
            if store.info.inversion != "ddim":  # a flow model (Wan)
                raise FateZeroError(
                    f"{self.node}: the sampler's sigmas do not match the attention store's (the store's: simple, "
                    f"{summary(store.edit_sigmas)}{got}). On SamplerCustomAdvanced: sigmas = the inversion's "
                    f"edit_sigmas, noise = its inverted_noise, sampler euler; the MODEL's shift (ModelSamplingSD3) "
                    "as at the inversion.")
            raise FateZeroError(
                f"{self.node}: the sampler's sigmas do not match the attention store's (the store's: ddim_uniform, "
                f"{summary(store.edit_sigmas)}{got}). On the sampler node: steps {steps} (the "
                f"inversion's steps input), sampler 'ddim', scheduler 'ddim_uniform', add_noise 'disable', "
                "start_at_step 0; or feed the inversion's edit_sigmas output to SamplerCustom.")
        return k

    def _source_layer(self, attn: str, key, q, k, v, kt, vt, other_out, gathered: bool, extra: dict):
        """The source pass: keep what the fused kernels consume; stop after the last fused layer."""
        fz, plan = extra["fatezero"], self.fusion
        if plan.fuses(key, q.shape[1]):
            fz["source"].qk[(attn, key)] = (q, kt if attn == "attn1" else k)
            if plan.fused_layers and (attn, key) == plan.fused_layers[-1]:
                raise SourcePassDone
        return self._unfused(q, k, v, kt, vt, extra["n_heads"], other_out, gathered, extra)
