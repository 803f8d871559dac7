"""Sampling a long clip window by window (``windows.py``) inside one sampler node.

An ``OUTER_SAMPLE`` wrapper on the patched MODEL: ComfyUI's sampler node hands it the
whole clip; it runs ComfyUI's own sampling once per sub-video, with the sub-video's rows of
the latent, the noise, the denoise mask and every per-frame conditioning input (ControlNet
hints, masks, ``c_concat`` sources, ...), and puts each window's own frames back in clip
order. Progress counts windows times steps; ComfyUI's interrupt is honoured between windows
(and, as always, between steps). The patch (``patch.py``) starts a run per window with the
window's plan (its store and blend mask) or recorder, so everything else sees an ordinary video.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from typing import Callable

import comfy.model_management
import torch

from ..errors import FateZeroError
from ..video import windows
from ..video.windows import SubVideo


def _return_freed_memory() -> None:
    """Give the previous window's freed activations back to the system. glibc keeps freed
    blocks in its heap (its mmap threshold rises after the first large free), so on CPU the
    process's memory would otherwise grow with the number of windows, not with their size."""
    comfy.model_management.soft_empty_cache()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _load_libc()


def slice_control(control, index: list[int], frames: int, copies: dict | None = None):
    """A copy of a ControlNet / T2I-Adapter chain whose per-frame hints hold only ``index``.

    ``copies`` (id of a control -> its copy) keeps one copy per control for a window: ComfyUI
    batches the positive and negative rows together only when they share the control object."""
    if control is None:
        return None
    copies = {} if copies is None else copies
    if id(control) in copies:
        return copies[id(control)]
    c = copies[id(control)] = control.copy()
    hint = getattr(control, "cond_hint_original", None)
    if torch.is_tensor(hint) and hint.shape[0] == frames:
        c.cond_hint_original = hint[index]
    extra = getattr(c, "extra_concat_orig", None)
    if extra:
        c.extra_concat_orig = [t[index] if torch.is_tensor(t) and t.shape[0] == frames else t for t in extra]
    c.set_previous_controlnet(slice_control(getattr(control, "previous_controlnet", None), index, frames, copies))
    return c


def slice_cond(cond: dict, index: list[int], frames: int, copies: dict) -> dict:
    """One conditioning entry (a CONDITIONING's dict, or a sampler's cond) with per-frame
    tensors (first dimension ``frames``) cut to the rows ``index``; the rest is shared."""
    out = dict(cond)
    for name, value in cond.items():
        if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == frames:
            out[name] = value[index]
        elif name == "control":
            out[name] = slice_control(value, index, frames, copies)
        elif name == "model_conds":
            out[name] = {n: c._copy_with(c.cond[index]) if torch.is_tensor(getattr(c, "cond", None))
                         and c.cond.shape[0] == frames else c for n, c in value.items()}
    return out


def sample_windows(executor, subs: list[SubVideo], node: str, start: Callable[[int], None],
                   window_latent: Callable[[int, torch.Tensor], torch.Tensor],
                   finish: Callable[[int, torch.Tensor], None], noise, latent_image, sampler, sigmas,
                   denoise_mask=None, callback=None, disable_pbar=False, seed=None, **kwargs) -> torch.Tensor:
    """The wrapped ``CFGGuider.outer_sample`` once per sub-video; the clip's latent back.

    ``start(k)`` readies the patch for window k, ``window_latent(k, rows)`` may replace the
    window's starting latent, ``finish(k, out)`` sees the window's output rows."""
    frames = sum(len(s.own_rows) for s in subs)
    if latent_image.is_nested or len(kwargs.get("latent_shapes") or ()) > 1:
        raise FateZeroError(f"{node}: the sampler's latent holds several latents in one (a nested latent); windows "
                            "cut one video latent. Sample the video's latent alone, or set the window to 0.")
    if latent_image.shape[0] != frames:
        raise FateZeroError(f"{node}: the sampler's latent has {latent_image.shape[0]} frames and the windows cover "
                            f"{frames}; sample the whole clip the windows were set for (the inverted latent).")
    guider = executor.class_obj
    conds = guider.conds  # this run's copies of the sampler's conditioning (before ComfyUI processes them)
    out = None
    x0_buf = x_buf = None
    try:
        for k, sub in enumerate(subs):
            comfy.model_management.throw_exception_if_processing_interrupted()
            if k:
                _return_freed_memory()
            index = list(sub.frames)
            copies: dict = {}  # one copy of each ControlNet per window
            guider.conds = {name: [slice_cond(c, index, frames, copies) for c in entries]
                            for name, entries in conds.items()}
            mask = denoise_mask
            if mask is not None and mask.shape[0] == frames:
                mask = mask[index]
            if "latent_shapes" in kwargs:
                kwargs["latent_shapes"] = [torch.Size((len(index), *latent_image.shape[1:]))]
            own = sub.own_rows
            own_frames = [sub.frames[r] for r in own]

            def window_callback(step, x0, x, total_steps, k=k, own=own, own_frames=own_frames):
                nonlocal x0_buf, x_buf
                if x0_buf is None:
                    x0_buf = x0.new_zeros(frames, *x0.shape[1:])
                    x_buf = x.new_zeros(frames, *x.shape[1:])
                x0_buf[own_frames], x_buf[own_frames] = x0[own], x[own]
                return callback(k * total_steps + step, x0_buf.clone(), x_buf.clone(), len(subs) * total_steps)

            start(k)
            latent = window_latent(k, latent_image[index])
            result = executor(noise[index], latent, sampler, sigmas, mask, window_callback if callback else None,
                              disable_pbar, seed, **kwargs)
            finish(k, result)
            if out is None:
                out = result.new_empty(frames, *result.shape[1:])
            out[own_frames] = result[own]
    finally:
        guider.conds = conds
    return out


def window_latent(plan, k: int, latent: torch.Tensor) -> torch.Tensor:
    """Window k starts from its own inverted anchor: the sub-video's, not the owner window's
    (they differ under video-wide GroupNorm), when the sampler starts from the inverted latent."""
    store = plan.store if plan is not None else None
    if store is None or store.anchor_latents is None:
        return latent
    subs = store.sub_videos()
    sub, owner = subs[k], windows.anchor_owner(subs)
    anchors = store.anchor_latents.to(latent)
    if sub.borrowed_anchor and torch.equal(latent[sub.anchor_row], anchors[owner]):
        latent = latent.clone()
        latent[sub.anchor_row] = anchors[k]
    return latent


def finish_window(recorders: list, k: int, out: torch.Tensor) -> None:
    """An inversion's window k is sampled: its recorder keeps the sub-video's inverted latent."""
    if recorders:
        recorders[k].inverted = out.detach().to("cpu", torch.float32, copy=True)
