"""The attention store: what fused editing needs to use the inversion-time attention.

Representation, chosen by measurement (bench/): the store keeps the exact UNet input of
every inversion call (the latent trajectory, ``[steps, frames, 4, h, w]``) and the source
conditioning. At edit step k the pack runs the source row once more through the same
patched UNet with that input; its attention *is* the inversion attention (same call),
and the fused kernels consume its q and k directly. Keeping maps instead, as the
authors' code does, costs ``frames * (hw)^2`` per layer and step, against
``steps * frames * 4 * h * w`` float32 values for the trajectory (``nbytes()`` counts every
tensor; ``make bench`` prints both sizes for SD1.5 at 512x512, 8 frames, 50 steps:
bench/README.md, "Memory and time"). Files: ``store_file.py``. The only maps kept are the small
blend-level cross-attention maps (mean over heads and layers) the blend mask is made from.

To repeat the inversion's call exactly, the store also keeps that call's per-row
conditioning as ComfyUI built it (``c_crossattn``, and ``c_concat`` for inpainting
models, ``y`` for ADM models, ...) and a description of the MODEL it ran with
(``model_state``): weights, LoRA and other patches, so a different MODEL is refused by name.

In ``cache`` mode the store also holds the source row's fused-layer queries and keys
(``source_cache``), so the edit need not run the source row at the cached steps.

A windowed store (``info.window`` > 0, ``windows.py``) holds the sub-videos' rows laid end to
end on the frame axis, one source cache per sub-video, and the inverted latent of each
sub-video's anchor row; ``window_store(k)`` is sub-video k as an ordinary store.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from ..edit.schedule import inversion_call
from ..video import windows
from .source_cache import SourceCache

# 2: the inversion call's conditioning and the MODEL's parts; 3: store mode and source cache; 4: windows;
# 5: model family (SD1, SD2, SD2-v, SDXL) and its fused query limit; 6: Wan (latent frames in one row)
FORMAT_VERSION = 6
READS_VERSIONS = (2, 3, 4, 5, 6)  # a version 2 file is a recompute-mode store, 2 and 3 are unwindowed, 2 to 4 SD1


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
    window: int = 0  # frames per window (windows.py); 0: the clip is one video
    model_family: str = "SD1"  # the family's name (families/); stores before format 4 are all SD1
    fuse_max_query: int = 32 * 32  # fused layers: at most this many queries (the family's fuse_max_query)
    # a video model's row holds the whole video: its latent frames (Wan: [1, C, T, h, w]); 0: a row is a frame
    latent_frames: int = 0
    inversion: str = "ddim"  # "ddim" (SD), "euler" or "fixed-point" (flow models, inversion/flow.py)
    # two experts (Wan 2.2 A14B): at sigmas >= expert_boundary the inversion ran the high-noise expert,
    # described here; below it the MODEL above (model_id, model_parts). 0: one model
    expert_boundary: float = 0.0
    high_noise_model_id: str = ""
    high_noise_model_parts: dict = field(default_factory=dict)
    # latent frames a start image in the latent kept clean (Wan 2.2 TI2V 5B, run/start_image.py); the
    # inversion's noise mask is replayed with the conditioning (source_conds["denoise_mask"])
    start_frames: int = 0
    format_version: int = FORMAT_VERSION

    @property
    def family(self):
        """The model family the store was inverted with (``families/``)."""
        from ..families import FAMILIES
        return FAMILIES[self.model_family]


@dataclass
class AttentionStore:
    info: StoreInfo
    sigmas: torch.Tensor          # [steps + 1] ascending inversion sigmas s_0..s_N
    # rows: the frames, or for a windowed store the sub-videos' rows end to end (``rows``)
    unet_inputs: torch.Tensor     # [steps, rows, C, h, w] x-space input of inversion call j
    source_context: torch.Tensor  # [1, 77, dim] the source prompt's cross-attention context
    # [steps, map_frames, h', w', tokens] float32 at the blend layers (mean over heads and layers); SD keeps the
    # 77 positions, Wan the source prompt's (its words and end token) of 512
    cross_maps: torch.Tensor
    # per-row tensors of the inversion's UNet call (c_crossattn, c_concat, y, ...): [rows, ...],
    # or [1, ...] when every row is the same (the prompt's context)
    source_conds: dict = field(default_factory=dict)
    cache: SourceCache | None = None
    extra: dict = field(default_factory=dict, repr=False)
    # windowed: one source cache per sub-video (cache mode), and each sub-video's inverted anchor
    # latent [windows, C, h, w] as the inversion's LATENT output holds latents
    window_caches: list = field(default_factory=list)
    anchor_latents: torch.Tensor | None = None
    # the inversion's outputs, so that a store loaded from a file can start the edit: its LATENT's
    # samples and, for a flow model, the sampler-space latent its inverted_noise holds (None in
    # files of older versions, and in a windowed store's sub-video stores)
    inverted_latent: torch.Tensor | None = None
    inverted_noise: torch.Tensor | None = None
    # a flow model's clean source latent in the sampler's space, from which the fusion node's noised
    # source mode brings the source row to each step's sigma (None in files of older versions)
    clean_latent: torch.Tensor | None = None

    def __post_init__(self):
        if not self.source_conds:  # a store built by hand (tests): the prompt is the only conditioning
            self.source_conds = {"c_crossattn": self.source_context}

    def source_inputs(self, device: torch.device) -> dict:
        """The inversion call's per-row inputs, one row per frame, on ``device``."""
        return {k: v.to(device).expand(self.info.frames, *v.shape[1:]) if v.shape[0] == 1 else v.to(device)
                for k, v in self.source_conds.items()}

    # -- windows --------------------------------------------------------------------------
    def sub_videos(self) -> list[windows.SubVideo]:
        return windows.sub_videos(self.info.frames, self.info.window, self.info.temporal_mode)

    @property
    def rows(self) -> int:
        return windows.row_count(self.info.frames, self.info.window, self.info.temporal_mode)

    @property
    def map_frames(self) -> int:
        """Frames of the blend maps: the rows, or a video model's latent frames."""
        return self.info.latent_frames or self.rows

    @property
    def has_cache(self) -> bool:
        return self.cache is not None or bool(self.window_caches)

    def window_rows(self, k: int) -> slice:
        """Sub-video ``k``'s rows among the store's rows."""
        subs = self.sub_videos()
        start = windows.row_starts(subs)[k]
        return slice(start, start + len(subs[k].frames))

    def window_store(self, k: int) -> "AttentionStore":
        """Sub-video ``k`` as an ordinary store (the store itself when it is not windowed)."""
        if not self.info.window:
            return self
        rows = self.window_rows(k)
        extra = dict(self.extra)
        controls = extra.pop("window_controls", None)
        if controls is not None:
            extra["source_control"] = controls[k]
        info = replace(self.info, frames=rows.stop - rows.start, window=0)
        conds = {n: v if v.shape[0] == 1 else v[rows] for n, v in self.source_conds.items()}
        return AttentionStore(info, self.sigmas, self.unet_inputs[:, rows], self.source_context,
                              self.cross_maps[:, rows], conds, self.window_caches[k] if self.window_caches else None,
                              extra)

    @classmethod
    def join(cls, info: StoreInfo, parts: list["AttentionStore"],
             anchor_latents: torch.Tensor | None) -> "AttentionStore":
        """A windowed store from the stores of its sub-videos (``info``: the clip's; ``anchor_latents``
        None in per-frame mode, which has no anchor)."""
        conds = {}
        for name in parts[0].source_conds:
            pieces = [p.source_conds[name] for p in parts]
            if all(t.shape[0] == 1 and torch.equal(t, pieces[0]) for t in pieces):
                conds[name] = pieces[0]
            else:
                conds[name] = torch.cat([t.expand(p.info.frames, *t.shape[1:]) for t, p in zip(pieces, parts)])
        store = cls(info, parts[0].sigmas, torch.cat([p.unet_inputs for p in parts], 1), parts[0].source_context,
                    torch.cat([p.cross_maps for p in parts], 1), conds,
                    window_caches=[p.cache for p in parts if p.cache is not None], anchor_latents=anchor_latents)
        controls = [p.extra.get("source_control") for p in parts]
        if any(c is not None for c in controls):
            store.extra["window_controls"] = controls
        return store

    @property
    def edit_sigmas(self) -> torch.Tensor:
        """The descending sigmas an edit visits (without its end point)."""
        return self.sigmas[1:].flip(0)

    def sampler_sigmas(self) -> torch.Tensor:
        """The inversion's edit_sigmas output: the edit's steps, then its end point ``s_0`` (the clean
        latent's sigma: 0, or SD's alphas_cumprod[0])."""
        return self.sigmas.flip(0)

    def expert_split_step(self) -> int:
        """Wan 2.2 A14B: how many edit steps start at sigma >= the expert boundary (SplitSigmas' step:
        the high-noise expert's); 0 for a store of one model."""
        return int((self.sigmas[1:] >= self.info.expert_boundary).sum()) if self.info.expert_boundary else 0

    def nbytes(self) -> int:
        tensors = [self.sigmas, self.unet_inputs, self.source_context, self.cross_maps, *self.source_conds.values()]
        tensors += [t for t in (self.anchor_latents, self.inverted_latent, self.inverted_noise, self.clean_latent)
                    if t is not None]
        caches = [self.cache] if self.cache else self.window_caches
        return sum(t.numel() * t.element_size() for t in tensors) + sum(c.nbytes() for c in caches)

    def cached(self, step: int) -> bool:
        """Whether edit step ``step`` reads the source cache rather than running the source row."""
        return self.cache is not None and inversion_call(self.info.steps, step) in self.cache.calls

    def without_cache(self) -> "AttentionStore":
        """The same store in recompute mode (shares every tensor)."""
        return replace(self, info=replace(self.info, store_mode="recompute", cache_steps=0), cache=None,
                       window_caches=[], extra=dict(self.extra))

    def cache_tensors(self) -> dict[str, torch.Tensor]:
        """The source cache's tensors by file key (``window.<k>.`` prefixed in a windowed store)."""
        if self.cache is not None:
            return self.cache.tensors()
        return {f"window.{k}.{name}": t for k, c in enumerate(self.window_caches) for name, t in c.tensors().items()}

    def check_consistent(self) -> None:
        i = self.info
        expect = (i.steps, self.rows)
        if tuple(self.unet_inputs.shape[:2]) != expect or tuple(self.unet_inputs.shape[-2:]) != tuple(i.latent_hw):
            raise ValueError(f"latent trajectory has shape {tuple(self.unet_inputs.shape)}, metadata says "
                             f"{i.steps} steps x {self.rows} rows ({i.frames} frames, window {i.window}) at "
                             f"{i.latent_hw}")
        if i.latent_frames and (self.unet_inputs.dim() != 6 or self.unet_inputs.shape[3] != i.latent_frames):
            raise ValueError(f"latent trajectory has shape {tuple(self.unet_inputs.shape)}, metadata says "
                             f"{i.latent_frames} latent frames per row")
        if self.sigmas.shape != (i.steps + 1,) or not bool((self.sigmas[1:] > self.sigmas[:-1]).all()):
            raise ValueError("sigmas do not match the metadata's steps or do not ascend")
        if tuple(self.cross_maps.shape[:2]) != (i.steps, self.map_frames):
            raise ValueError("cross-attention maps do not match the metadata's steps and frames")
        bad = [k for k, v in self.source_conds.items() if v.shape[0] not in (1, self.rows)]
        if bad:
            raise ValueError(f"the inversion's conditioning {bad} does not have one row per frame ({self.rows})")
        if i.window:
            subs = self.sub_videos()
            want = None if subs[0].anchor_row is None else (len(subs), *self.unet_inputs.shape[2:])
            if (None if self.anchor_latents is None else tuple(self.anchor_latents.shape)) != want:
                raise ValueError(f"the store has {len(subs)} windows and anchor latents of shape "
                                 f"{None if self.anchor_latents is None else tuple(self.anchor_latents.shape)}")
            if self.window_caches and [c.frames for c in self.window_caches] != [len(s.frames) for s in subs]:
                raise ValueError("the source caches do not match the store's windows")
        for cache in [self.cache] if self.cache else self.window_caches:
            cache.check(i.steps)
        for name in ("inverted_latent", "inverted_noise", "clean_latent"):
            t = getattr(self, name)
            if t is not None and tuple(t.shape[-2:]) != tuple(i.latent_hw):
                raise ValueError(f"{name} has shape {tuple(t.shape)}, metadata says {i.latent_hw}")
        if not bool(torch.isfinite(self.unet_inputs).all()):
            raise ValueError("the latent trajectory holds non-finite values")
