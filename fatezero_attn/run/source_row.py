"""The source row as its own UNet call (FateZero's inversion-time attention, recomputed).

At a fused edit step the model wrapper runs, before the call ComfyUI built, the inversion's
UNet call of that timestep: its input latent, sigma, conditioning (and ControlNet) and the
patches of the fusion node's MODEL. That pass keeps the q and k of the fused layers and stops
after the last one (``SourcePassDone``). On a DiT it stops at the first block instead, and the
source row walks the blocks beside the edit call (``source_blocks.py``). A store in cache mode
(``source_cache.py``) holds those q and k from the inversion itself, and the pass does not run.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..edit.schedule import edit_step, nearest_edit_step
from ..errors import FateZeroError
from ..store import model_state
from .call_info import CallInfo
from .plan import FusionPlan
from .run_state import RunState, SourceAttention, SourcePassDone
from .source_blocks import entry_hook


def copy_options(value):
    """Dicts and lists copied, leaves shared (what ``ModelPatcher.clone`` does in 0.38)."""
    if isinstance(value, dict):
        return {k: copy_options(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_options(v) for v in value]
    return value


class SourceRow:
    """The edit step of a call, the checks on the edit rows, and the source row's q and k."""

    def __init__(self, node: str, call_model: Callable, options: dict | None = None, wrappers: dict | None = None,
                 weight_state: dict | None = None, patches_at_install: dict | None = None, by_block: bool = False):
        """``call_model(apply_model, args, x, t, c, chunk)`` runs one model call as the patch's
        wrapper does; the source pass runs with ``options`` (transformer_options), ``wrappers`` and
        other nodes' replaces found at install; ``weight_state``: the MODEL's, checked at the sampler;
        ``by_block``: the source row may walk beside the edit call (``source_blocks.py``)."""
        self.node, self.call_model = node, call_model
        self.options, self.wrappers = options or {}, wrappers or {}
        self.weight_state = weight_state
        self.patches_at_install = {} if patches_at_install is None else patches_at_install
        self.by_block = by_block

    @classmethod
    def for_model(cls, node: str, model_patcher, patches_at_install: dict, call_model: Callable,
                  by_block: bool = False) -> "SourceRow":
        """The source row of ``model_patcher`` as the fusion node received it (the inversion's MODEL,
        checked by the node), not patches added downstream."""
        return cls(node, call_model, copy_options(model_patcher.model_options.get("transformer_options", {})),
                   copy_options(getattr(model_patcher, "wrappers", {})), model_state.weight_state(model_patcher),
                   patches_at_install, by_block)

    def check_edit_rows(self, run: RunState, x, chunk: int, apply_model) -> None:
        info = run.plan.store.info
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
            if stamp == run.checked_weights:
                return
            now = model_state.weight_state(patcher)
            if now != self.weight_state:
                diff = "; ".join(model_state.differences(self.weight_state, now)).replace("at inversion", "at the fusion node")
                raise FateZeroError(
                    f"{self.node}: a node between FateZero Attention Fusion and the sampler changed the model "
                    f"({diff}), so the source row would no longer repeat the inversion. Apply LoRAs and model "
                    "patches before the inversion and the fusion node (to the MODEL both receive). On the sampler "
                    "node: connect the fusion node's MODEL output directly.")
            run.checked_weights = stamp

    def attention(self, run: RunState, step: int, apply_model, args: dict, call_opts: dict,
                  by_block: bool = False) -> SourceAttention:
        """The fused sites' q, k of the inversion's call ``N-1-step``: from the store's source cache
        when it holds that call, else by running the source row alone (``by_block``: up to the first
        block, to walk beside this call). In the noised-source mode the source row is the store's
        clean latent noised to this call's sigma with the plan's noise, as the sampler noises a latent."""
        x, sigma = args["input"], float(args["timestep"][0])
        if run.source is not None and run.source.ready(step, sigma):
            return run.source  # a second call of the same step (several conds, PAG, ...)
        run.source = None  # free the previous step's tensors first
        plan = run.plan
        store = plan.store
        j = plan.inversion_call(step)
        if store.cached(step):  # cache mode: the inversion kept this call's tensors
            run.source = SourceAttention(step, store.cache.read(j, x.device), sigma=sigma)
            if run.fused_layers is None:  # in the order a source pass meets them, for later uncached steps
                run.fused_layers = list(run.source.qk)
            return run.source
        if plan.source_noise is not None:  # noised source: the clean source at this call's sigma
            ms = apply_model.__self__.model_sampling
            src_x = ms.noise_scaling(torch.tensor([sigma]), plan.source_noise, store.clean_latent).to(x)
            kept = store.source_conds.get("denoise_mask")
            if kept is not None:  # a start image's frames stay clean, as the sampler keeps them
                src_x = src_x * kept.to(x) + store.clean_latent.to(x) * (1 - kept.to(x))
        else:
            src_x, sigma = store.unet_inputs[j].to(x), float(store.sigmas[j + 1])  # the inversion's call
        t = torch.full((store.info.frames,), sigma, device=x.device)
        c = store.source_inputs(x.device)
        control = store.extra.get("source_control")  # the inversion's ControlNet / T2I-Adapter, if any
        # per-call entries (sigmas, ...) from this call; patches only from the fusion node's MODEL
        opts = {k: v for k, v in call_opts.items() if k not in ("patches", "patches_replace")}
        opts.update(copy_options(self.options), wrappers=copy_options(self.wrappers),
                    cond_or_uncond=[0], uuids=["fatezero-source"], sample_sigmas=store.sigmas.to(x.device))
        source = SourceAttention(step, by_block=by_block, sigma=float(args["timestep"][0]))
        opts["fatezero"] = CallInfo(["source"], store.info.frames, run, step, source, dict(self.patches_at_install),
                                    block_hook=entry_hook(source) if by_block else None)
        c["transformer_options"] = opts
        if control is not None:
            c["control"] = self._ready_control(run, control, apply_model).get_control(src_x, t, c, 1, opts)
        try:
            self.call_model(apply_model, {**args, "cond_or_uncond": [0]}, src_x, t, c, store.info.frames)
            if run.fused_layers is None:
                run.fused_layers = list(source.qk)
        except SourcePassDone:
            pass
        if source.by_block and source.entry is None:
            raise FateZeroError(
                f"{self.node}: the source row's model call did not reach the first transformer block (a wrapper "
                "around the diffusion model returned early, e.g. a step cache). Apply that node before the inversion "
                f"and {self.node}, or leave it out.")
        run.source = source
        return source

    @staticmethod
    def _ready_control(run: RunState, control, apply_model):
        """The inversion's control, readied once per run as ComfyUI readies a sampler's: model
        sampling set, its models loaded (they may have been offloaded since the last run), and
        cleaned up when the run ends."""
        if not any(c is control for c in run.controls):
            import comfy.model_management
            model = apply_model.__self__
            control.pre_run(model, lambda percent: model.model_sampling.percent_to_sigma(percent))
            comfy.model_management.load_models_gpu(control.get_models())
            run.controls.append(control)
        return control

    def edit_step(self, plan: FusionPlan, sigma: float, opts: dict) -> int:
        """The edit step of a call at ``sigma``; a sigma of no edit step, or of the other expert, stops."""
        store, expert = plan.store, plan.expert
        # a noised source follows the sampler's own schedule, each step read as the store's nearest
        step = edit_step(sigma, store.sigmas) if plan.source_noise is None else nearest_edit_step(sigma, store.sigmas)
        if step is not None and expert is not None and (sigma >= store.info.expert_boundary) != (expert == "high"):
            side = "high" if expert == "low" else "low"
            raise FateZeroError(
                f"{self.node}: this step (sigma {sigma:.4g}) is on the {side}-noise expert's side of the boundary "
                f"{store.info.expert_boundary:g}, and this MODEL is the attention store's {expert}-noise expert. "
                f"Connect the {side}-noise expert's fused MODEL to this sampler, and split the sigmas at the "
                "inversion's expert_split_step (SplitSigmas).")
        if step is None:
            summary = lambda s: f"{len(s)} steps, sigma {float(s[0]):.4g} to {float(s[-1]):.4g}"
            sample = opts.get("sample_sigmas")
            got = "" if sample is None else f"; the sampler's: {summary(sample[sample > 0])}"
            steps = store.info.steps_input or store.info.steps
            if store.info.family.inverter == "flow":
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
        return step


def keep_source_layer(info: CallInfo, attn: str, key, q, k) -> None:
    """The source pass at one site: keep what the fused kernels consume (self-attention keys
    gathered across frames); stop after the last fused site (a walk's, or once a whole pass knows it)."""
    run, source = info.run, info.source
    if run.plan.fuses(key, q.shape[1]):
        source.qk[(attn, key)] = (q, k)
        last = source.last_site if source.by_block else (run.fused_layers or [None])[-1]
        if (attn, key) == last:
            raise SourcePassDone
