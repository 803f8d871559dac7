"""What a model family is: everything the pack does differently per model.

A family (``ModelFamily``) is detected from a MODEL (``detect``), says how its inversion runs
(``inverter``), how its text encoder lays out a prompt (``text_window``), what its VAE does to
pixels and frames (``vae_scale``, ``frame_compression``), which layers it fuses by default, and
whether the SD-only spatio-temporal modes apply. ``seam(diffusion_model)`` binds its attention
seam to one model; the seam (``AttentionSeam``) is the only way the run's parts reach the model:

- ``sites``: every attention site, as hashable keys; ``site_key(extra)``: the site of a call;
- ``take_over(model_patcher, dispatcher)``: route every site's self-attention (``attn1``) and
  cross-attention (``attn2``) to ``dispatcher(attn, q, k, v, extra)``, composed with what other
  nodes put there; q, k, v arrive projected, ``[batch, tokens, heads * dim_head]``, and the
  dispatcher returns the attention output before the output projection. ``extra`` holds
  ``n_heads``, the call's ``CallInfo`` under ``"fatezero"`` and, when plain attention is not
  ComfyUI's ``optimized_attention``, the ``attention_fn`` to use;
- ``prepare_call(opts, dispatcher)``: per model call, other nodes' patches to compose at each
  site; ``token_grid(x)``: a DiT's ``(T, h, w)`` token grid of the call's latent, or None;
- ``is_blend_layer(extra)`` and ``map_grid(extra)``: the layers whose cross-attention makes the
  blend mask, and the ``(h, w)`` of one frame's map at a call;
- ``group_norm_names()``: the norms that take statistics over a frame (video-wide GroupNorm).

A new family is one module here that subclasses ``ModelFamily`` (a DiT: ``dit.DiTFamily`` and
``dit.DiTSeam``) and one ``register`` call (``families/__init__.py``).
"""
from __future__ import annotations

from typing import Any, ClassVar, Protocol

from ..edit.alignment import CLIP_WINDOW, TextWindow


class AttentionSeam(Protocol):
    sites: list
    source_by_block: bool  # the source row can walk the blocks beside the edit call (a DiT's)

    def site_key(self, extra: dict) -> Any: ...
    def take_over(self, model_patcher, dispatcher) -> None: ...
    def prepare_call(self, opts: dict, dispatcher) -> dict: ...
    def token_grid(self, x) -> tuple[int, int, int] | None: ...
    def is_blend_layer(self, extra: dict) -> bool: ...
    def map_grid(self, extra: dict) -> tuple[int, int]: ...
    def group_norm_names(self) -> list[str]: ...
    # seams with source_by_block only (a DiT's, dit.py):
    # label_block(options, block) -> dict; runs_own_blocks(opts, last_block) -> bool


class ModelFamily:
    """One model family; instances are the families, by ``name``."""
    inverter: ClassVar[str] = "ddim"        # "ddim": a discrete schedule; "flow": Euler flow inversion
    text_window: ClassVar[TextWindow] = CLIP_WINDOW
    text_encoder: ClassVar[str] = "the CLIP output of the Load Checkpoint node that loads this model"
    spatio_temporal: ClassVar[bool] = True  # the SD spatio-temporal modes and video GroupNorm apply
    blocks_by_index: ClassVar[bool] = False  # fused and blend layers chosen by block index (a DiT)
    latent_blend: ClassVar[bool] = True  # the authors' post-step latent blend is available

    def __init__(self, name: str, native_size: int, vae_scale: int = 8, frame_compression: int = 0):
        """``native_size``: pixels of the side it was trained at; ``vae_scale``: pixels per latent
        pixel; ``frame_compression``: video frames per latent frame after the first (0: an image
        model, whose batch rows are the frames)."""
        self.name, self.native_size = name, native_size
        self.vae_scale, self.frame_compression = vae_scale, frame_compression

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    @property
    def fuse_max_query(self) -> int:
        """Query length up to which layers are fused; 0 where fused sites are chosen by index."""
        return 0

    def seam(self, diffusion_model, blend_choice: str = "") -> AttentionSeam:
        raise NotImplementedError

    def text_widths(self, diffusion_model) -> frozenset:
        """The widths of the text embeddings the model takes (its cross-attention keys' input:
        an SD UNet's context_dim); empty when the family cannot tell."""
        return frozenset(m.to_k.in_features for name, m in diffusion_model.named_modules()
                         if name.endswith("attn2") and hasattr(getattr(m, "to_k", None), "in_features"))

    def fused_sites(self, diffusion_model, choice: str = "") -> frozenset | None:
        """The fused sites, or None when layers are fused by query count (``fuse_max_query``)."""
        return None

    def latent_frames(self, frames: int) -> int:
        """Latent frames of a clip of ``frames`` video frames (0: an image model)."""
        return 1 + (frames - 1) // self.frame_compression if self.frame_compression else 0

    def video_frame_latents(self, latent_frames: int) -> list[int]:
        """For each video frame, its latent frame: the VAE keeps frame 0 alone and packs each
        following ``frame_compression`` frames into one."""
        c = self.frame_compression
        return [0] + [1 + (f - 1) // c for f in range(1, c * (latent_frames - 1) + 1)]
