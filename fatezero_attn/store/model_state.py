"""What a UNet call depends on besides its inputs: the MODEL's weights and the patches on them.

The fused edit re-runs the inversion's UNet call (the *source row*), so the MODEL used
for editing must compute that call as the inversion's MODEL did. ``describe(model)`` names
every part that can change it (weights, weight patches such as LoRA, object patches,
transformer patches, attention replaces, wrappers) as a short readable string, so a
mismatch can be reported by name. Patches that FateZero itself installs are left out.
"""
from __future__ import annotations

import hashlib
from typing import Any, Iterable

import torch

# Sampled values per tensor: enough to tell two LoRAs (or two fine-tunes) apart, cheap at any size.
_SAMPLES = 64


def _is_fatezero(fn: Any) -> bool:
    """The pack's own wrapper (a FateZeroPatch method) or attention replace."""
    owner = getattr(fn, "__self__", None)
    return type(fn).__name__ == "AttentionReplace" or (owner is not None and type(owner).__name__ == "FateZeroPatch")


def _setting(value: Any) -> bool:
    """A node's setting (a number, a string, or a small container of them), not run-time state."""
    if isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (tuple, list)) and len(value) <= 16:
        return all(_setting(v) for v in value)
    if isinstance(value, dict) and len(value) <= 16:
        return all(_setting(k) and _setting(v) for k, v in value.items())
    return False


def _name(fn: Any) -> str:
    """The patch function's name with the settings it closes over, e.g. ``patch.<locals>.f(1.3, 0.9)``:
    FreeU with other factors or SAG with another scale is another patch. Tensors and objects are
    left out: they may hold state a run changes (SAG keeps the last attention map)."""
    base = getattr(fn, "func", fn)  # functools.partial
    name = getattr(base, "__qualname__", None) or type(base).__qualname__
    values = [getattr(fn, "args", ()), getattr(fn, "keywords", None) or {}]
    for cell in getattr(base, "__closure__", None) or ():
        try:
            values.append(cell.cell_contents)
        except ValueError:  # an empty cell
            pass
    settings = [repr(v) for v in values if _setting(v) and v not in ((), {})]
    return f"{name}({', '.join(settings)})" if settings else name


def _tensors(value: Any) -> Iterable[torch.Tensor]:
    """Every tensor inside a weight patch (tuples, lists, adapters with ``.weights``)."""
    if torch.is_tensor(value):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _tensors(v)
    elif hasattr(value, "weights"):
        yield from _tensors(value.weights)


def _stored(t: torch.Tensor) -> list[torch.Tensor]:
    """What a weight stores, as plain tensors, so that a quantized weight is sampled without being
    dequantized: ComfyUI's ``QuantizedTensor`` (fp8 with ``weight_scale``; newer ComfyUI loads
    every scaled-fp8 file so) is its data and scales (slicing it would dequantize the whole tensor);
    ComfyUI-GGUF's ``GGMLTensor`` is its raw blocks (the bytes it held before, as a plain tensor);
    float8 and every other tensor is itself."""
    qdata = getattr(t, "_qdata", None)
    if torch.is_tensor(qdata):
        params = getattr(t, "_layout_params", None) or {}
        return [qdata] + [v for _, v in sorted(params.items()) if torch.is_tensor(v)]
    if hasattr(t, "tensor_type"):
        return [t.as_subclass(torch.Tensor)]
    return [t]


def _tensor_digest(h, t: torch.Tensor) -> None:
    h.update(str(tuple(t.shape)).encode())
    if t.device.type == "meta":
        # a weight the file did not have (ComfyUI 0.38 builds models on "meta"): 0.38 fills it with
        # zeros when it loads the model (ModelPatcher.load) or first casts it (dynamic VRAM,
        # ops.materialize_meta_param), so it is sampled as those zeros: the same fingerprint before and after
        n = t.numel()
        h.update(torch.zeros(len(range(0, n, max(1, n // _SAMPLES))[:_SAMPLES])).numpy().tobytes())
        return
    for part in _stored(t):
        flat = part.detach().reshape(-1)
        step = max(1, flat.numel() // _SAMPLES)
        h.update(flat[::step][:_SAMPLES].float().cpu().numpy().tobytes())


def weights_digest(model_patcher) -> str:
    """Strided samples of every UNet parameter as loaded (before any LoRA), and the model type.

    ComfyUI patches weights in place while a patched clone is loaded and keeps the
    originals in ``backup``, which all clones of a model share."""
    model = model_patcher.model
    backup = getattr(model_patcher, "backup", {})
    h = hashlib.sha1(type(model.model_config).__name__.encode())
    for name, p in model.diffusion_model.named_parameters():
        saved = backup.get(f"diffusion_model.{name}")
        h.update(name.encode())
        _tensor_digest(h, saved.weight if saved is not None else p)
    return h.hexdigest()[:16]


def _weight_patches(patches: dict) -> str:
    if not patches:
        return "none"
    h = hashlib.sha1()
    strengths = set()
    for key in sorted(patches):
        for entry in patches[key]:
            strength_patch, value, strength_model = entry[0], entry[1], entry[2]
            strengths.add(f"{float(strength_patch):g}" if strength_model == 1 else
                          f"{float(strength_patch):g}x{float(strength_model):g}")
            h.update(f"{key}|{strength_patch}|{strength_model}|{type(value).__name__}".encode())
            for t in _tensors(value):
                _tensor_digest(h, t)
    return (f"{len(patches)} patched weights (LoRA or similar) at strength {', '.join(sorted(strengths))}, "
            f"fingerprint {h.hexdigest()[:8]}")


def _object_patches(object_patches: dict) -> str:
    names = sorted(k for k, v in object_patches.items() if not hasattr(v, "_video_batch"))
    return ", ".join(names) if names else "none"


def _transformer_patches(transformer_options: dict) -> tuple[str, str]:
    patches = transformer_options.get("patches", {})
    kinds = [f"{kind}: {', '.join(_name(f) for f in fns)}" for kind, fns in sorted(patches.items()) if fns]
    replaces = []
    for attn, table in sorted(transformer_options.get("patches_replace", {}).items()):
        for key, fn in sorted(table.items(), key=lambda kv: str(kv[0])):
            if not _is_fatezero(fn):
                replaces.append(f"{attn} {key}: {_name(fn)}")
            else:  # other packs' callbacks chained onto the pack's replace (IP-Adapter's .add)
                replaces += [f"{attn} {key}: {_name(cb)} (chained)" for cb in getattr(fn, "callbacks", [])]
    return ("; ".join(kinds) or "none"), ("; ".join(replaces) or "none")


def _wrappers(model_patcher) -> str:
    out = []
    wrapper = model_patcher.model_options.get("model_function_wrapper")
    while wrapper is not None and _is_fatezero(wrapper):
        wrapper = wrapper.__self__.previous_wrapper
    if wrapper is not None:
        out.append(f"model_function_wrapper: {_name(wrapper)}")
    for kind, by_key in sorted(getattr(model_patcher, "wrappers", {}).items()):
        for key, fns in sorted(by_key.items()):
            out += [f"{kind}/{key}: {_name(f)}" for f in fns]
    return "; ".join(out) or "none"


def weight_state(model_patcher) -> dict[str, str]:
    """The parts applied to the module itself, hence shared by every row of a UNet call."""
    return {"weight patches": _weight_patches(model_patcher.patches),
            "object patches": _object_patches(model_patcher.object_patches)}


def describe(model_patcher) -> dict[str, str]:
    """Every part of a MODEL that can change a UNet call, by name."""
    transformer_patches, attention_replaces = _transformer_patches(
        model_patcher.model_options.get("transformer_options", {}))
    return {"weights": weights_digest(model_patcher),
            **weight_state(model_patcher),
            "transformer patches": transformer_patches,
            "attention replace patches": attention_replaces,
            "model wrappers": _wrappers(model_patcher)}


def digest(parts: dict[str, str]) -> str:
    return hashlib.sha1(repr(sorted(parts.items())).encode()).hexdigest()[:16]


def differences(then: dict[str, str], now: dict[str, str]) -> list[str]:
    """``"<part>: at inversion <a>, now <b>"`` for every part that differs."""
    return [f"{part}: at inversion {then.get(part, 'unknown')}, now {now.get(part, 'unknown')}"
            for part in sorted(set(then) | set(now)) if then.get(part) != now.get(part)]
