"""The attention store: what fused editing needs to use the inversion-time attention.

Representation, chosen by measurement (bench/): the store keeps the exact UNet input of
every inversion call (the latent trajectory, ``[steps, frames, 4, h, w]``) and the source
conditioning. At edit step k the pack runs the source row once more through the same
patched UNet with that input; its attention *is* the inversion attention (same call),
and the fused kernels consume its q and k directly. Keeping maps instead, as the
authors' code does, costs ``frames * (hw)^2`` per layer and step: about 100 GB for 8
frames at 512x512 and 50 steps, against 27 MB for the trajectory. The only maps kept are
the small blend-level cross-attention maps (mean over heads and layers) the blend mask
is made from.

To repeat the inversion's call exactly, the store also keeps that call's per-row
conditioning as ComfyUI built it (``c_crossattn``, and ``c_concat`` for inpainting
models, ``y`` for ADM models, ...) and a description of the MODEL it ran with
(``model_state``): weights, LoRA and other patches, so a different MODEL is refused by name.

In ``cache`` mode the store also holds the source row's fused-layer queries and keys
(``source_cache``), so the edit need not run the source row at the cached steps.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from .source_cache import SourceCache

FORMAT_VERSION = 3  # 2: the inversion call's conditioning and the MODEL's parts; 3: store mode and source cache
READS_VERSIONS = (2, 3)  # a version 2 file is a recompute-mode store


@dataclass
class StoreInfo:
    """Metadata checked when a store is loaded or used."""
    model_id: str
    steps: int
    frames: int
    latent_hw: tuple[int, int]
    temporal_mode: str
    temporal_min_channels: int
    video_groupnorm: bool
    source_context_sha1: str = ""
    model_parts: dict = field(default_factory=dict)  # model_state.describe() of the inversion's MODEL
    source_control: bool = False  # the inversion's conditioning carried a ControlNet / T2I-Adapter
    steps_input: int = 0  # the inversion node's steps input (ddim_uniform may make one more step)
    store_mode: str = "recompute"  # or "cache" (source_cache.py)
    cache_steps: int = 0  # cache mode: edit steps k < cache_steps read the source cache
    format_version: int = FORMAT_VERSION


@dataclass
class AttentionStore:
    info: StoreInfo
    sigmas: torch.Tensor          # [steps + 1] ascending inversion sigmas s_0..s_N
    unet_inputs: torch.Tensor     # [steps, frames, C, h, w] x-space input of inversion call j
    source_context: torch.Tensor  # [1, 77, dim] the source prompt's cross-attention context
    cross_maps: torch.Tensor      # [steps, frames, h/f, w/f, 77] float32 at the blend layers (mean over heads and layers)
    # per-row tensors of the inversion's UNet call (c_crossattn, c_concat, y, ...): [frames, ...],
    # or [1, ...] when every frame's row is the same (the prompt's context)
    source_conds: dict = field(default_factory=dict)
    cache: SourceCache | None = None
    extra: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if not self.source_conds:  # a store built by hand (tests): the prompt is the only conditioning
            self.source_conds = {"c_crossattn": self.source_context}

    def source_inputs(self, device: torch.device) -> dict:
        """The inversion call's per-row inputs, one row per frame, on ``device``."""
        return {k: v.to(device).expand(self.info.frames, *v.shape[1:]) if v.shape[0] == 1 else v.to(device)
                for k, v in self.source_conds.items()}

    @property
    def edit_sigmas(self) -> torch.Tensor:
        """The descending sigmas an edit visits (without its end point)."""
        return self.sigmas[1:].flip(0)

    def nbytes(self) -> int:
        tensors = [self.sigmas, self.unet_inputs, self.source_context, self.cross_maps, *self.source_conds.values()]
        return sum(t.numel() * t.element_size() for t in tensors) + (self.cache.nbytes() if self.cache else 0)

    def cached(self, step: int) -> bool:
        """Whether edit step ``step`` reads the source cache rather than running the source row."""
        return self.cache is not None and self.info.steps - 1 - step in self.cache.calls

    def without_cache(self) -> "AttentionStore":
        """The same store in recompute mode (shares every tensor)."""
        return replace(self, info=replace(self.info, store_mode="recompute", cache_steps=0), cache=None,
                       extra=dict(self.extra))

    # -- files ----------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        from safetensors.torch import save_file
        meta = {"fatezero_store": json.dumps(asdict(self.info))}
        tensors = {"sigmas": self.sigmas, "unet_inputs": self.unet_inputs,
                   "source_context": self.source_context, "cross_maps": self.cross_maps,
                   **{f"cond.{k}": v for k, v in self.source_conds.items()},
                   **(self.cache.tensors() if self.cache else {})}
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path), metadata=meta)

    @classmethod
    def load(cls, path: Path) -> "AttentionStore":
        """Load and check a store file; ``ValueError`` says what is wrong with it."""
        from safetensors import safe_open
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises its own error types for bad headers
            raise ValueError(f"not a readable safetensors file ({e})") from None
        if "fatezero_store" not in meta:
            raise ValueError("this safetensors file is not a FateZero attention store")
        raw = json.loads(meta["fatezero_store"])
        version = raw.get("format_version")
        if version not in READS_VERSIONS:
            raise ValueError(f"store format version {version}, this pack reads versions 2 and 3 (version 2 "
                             "records the inversion's conditioning and LoRAs, which older files lack); "
                             "run the inversion again with this version of the pack")
        info = StoreInfo(**{**raw, "latent_hw": tuple(raw["latent_hw"]), "format_version": FORMAT_VERSION})
        missing = {"sigmas", "unet_inputs", "source_context", "cross_maps"} - tensors.keys()
        if missing:
            raise ValueError(f"the file lacks {sorted(missing)}")
        conds = {k[len("cond."):]: v for k, v in tensors.items() if k.startswith("cond.")}
        if "c_crossattn" not in conds:
            raise ValueError("the file lacks the inversion's conditioning (cond.c_crossattn)")
        cache = None
        cache_tensors = [k for k in tensors if k.startswith("cache.")]
        if info.store_mode not in ("recompute", "cache") or bool(cache_tensors) != (info.store_mode == "cache"):
            raise ValueError(f"store mode {info.store_mode!r} with {len(cache_tensors)} source cache tensors")
        if info.store_mode == "cache":
            cache = SourceCache(info.frames, info.temporal_mode, info.temporal_min_channels, info.cache_steps)
            cache.load_tensors({k: v for k, v in tensors.items() if k.startswith("cache.")})
        store = cls(info, tensors["sigmas"], tensors["unet_inputs"], tensors["source_context"], tensors["cross_maps"],
                    conds, cache)
        store.check_consistent()
        return store

    def check_consistent(self) -> None:
        i = self.info
        expect = (i.steps, i.frames)
        if tuple(self.unet_inputs.shape[:2]) != expect or tuple(self.unet_inputs.shape[-2:]) != tuple(i.latent_hw):
            raise ValueError(f"latent trajectory has shape {tuple(self.unet_inputs.shape)}, metadata says "
                             f"{i.steps} steps x {i.frames} frames at {i.latent_hw}")
        if self.sigmas.shape != (i.steps + 1,) or not bool((self.sigmas[1:] > self.sigmas[:-1]).all()):
            raise ValueError("sigmas do not match the metadata's steps or do not ascend")
        if tuple(self.cross_maps.shape[:2]) != expect:
            raise ValueError("cross-attention maps do not match the metadata's steps and frames")
        bad = [k for k, v in self.source_conds.items() if v.shape[0] not in (1, i.frames)]
        if bad:
            raise ValueError(f"the inversion's conditioning {bad} does not have one row per frame ({i.frames})")
        if self.cache is not None:
            self.cache.check(i.steps)
        if not bool(torch.isfinite(self.unet_inputs).all()):
            raise ValueError("the latent trajectory holds non-finite values")
