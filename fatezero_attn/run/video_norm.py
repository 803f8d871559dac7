"""Video-wide GroupNorm: the UNet's norms take statistics over all frames of a branch.

Installed as object patches on the MODEL clone (ComfyUI restores the modules after sampling);
the patched norm shares its parameters with the original and reads the rows per branch of
the UNet call in flight from a ``VideoBatch`` the model wrapper sets."""
from __future__ import annotations

import torch


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


def _plain_norm(norm: torch.nn.Module) -> torch.nn.Module:
    """The plain GroupNorm under a video-wide one (to re-patch without stacking)."""
    base = type(norm).__mro__[1]
    plain = base.__new__(base)
    plain.__dict__ = {k: v for k, v in norm.__dict__.items() if k != "_video_batch"}
    return plain


def set_video_group_norm(model_patcher, names: list[str], on: bool, batch: VideoBatch) -> None:
    """Patch the named norms video-wide (``on``), or drop an earlier FateZero patch's."""
    for name in names:
        if on:
            norm = model_patcher.get_model_object(name)
            if hasattr(norm, "_video_batch"):
                norm = _plain_norm(norm)
            model_patcher.add_object_patch(name, video_group_norm(norm, batch))
        elif hasattr(model_patcher.object_patches.get(name), "_video_batch"):
            del model_patcher.object_patches[name]
