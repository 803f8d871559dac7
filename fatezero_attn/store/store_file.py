"""Attention store files: ``save_store`` writes an ``AttentionStore`` as safetensors (its
``StoreInfo`` as JSON metadata), ``load_store`` reads one back and checks it, older formats
included (``READS_VERSIONS``), so a bad file fails with a ``ValueError`` that says why."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ..families import FAMILIES
from ..video import windows
from .attention_store import FORMAT_VERSION, READS_VERSIONS, AttentionStore, StoreInfo
from .source_cache import SourceCache


def save_store(store: AttentionStore, path: Path) -> None:
    """Write ``store`` as a safetensors file: its tensors, and its ``StoreInfo`` as JSON metadata."""
    from safetensors.torch import save_file
    meta = {"fatezero_store": json.dumps(asdict(store.info))}
    tensors = {"sigmas": store.sigmas, "unet_inputs": store.unet_inputs,
               "source_context": store.source_context, "cross_maps": store.cross_maps,
               **{f"cond.{k}": v for k, v in store.source_conds.items()},
               **{k: v for k in ("anchor_latents", "inverted_latent", "inverted_noise", "clean_latent")
                  if (v := getattr(store, k)) is not None},
               **store.cache_tensors()}
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path), metadata=meta)


def load_store(path: Path) -> AttentionStore:
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
        raise ValueError(f"store format version {version}, this pack reads versions 2 to 6 (version 2 "
                         "records the inversion's conditioning and LoRAs, which older files lack); "
                         "run the inversion again with this version of the pack")
    info = StoreInfo(**{**raw, "latent_hw": tuple(raw["latent_hw"]), "format_version": FORMAT_VERSION})
    missing = {"sigmas", "unet_inputs", "source_context", "cross_maps"} - tensors.keys()
    if missing:
        raise ValueError(f"the file lacks {sorted(missing)}")
    family = FAMILIES.get(info.model_family)
    if family is None or family.fuse_max_query != info.fuse_max_query:
        raise ValueError(f"model family {info.model_family!r} with fused query limit {info.fuse_max_query}")
    if version < 5 and tensors["source_context"].shape[-1] != 768:
        raise ValueError(f"a store of format {version} from a model with {tensors['source_context'].shape[-1]}-wide "
                         "text context: older versions of the pack recorded no model family, and only SD1 "
                         "stores load from them; run the inversion again with this version of the pack")
    conds = {k[len("cond."):]: v for k, v in tensors.items() if k.startswith("cond.")}
    if "c_crossattn" not in conds:
        raise ValueError("the file lacks the inversion's conditioning (cond.c_crossattn)")
    subs = windows.sub_videos(info.frames, info.window, info.temporal_mode) if info.window else []
    if subs and subs[0].anchor_row is not None and "anchor_latents" not in tensors:
        raise ValueError("a windowed store without its sub-videos' anchor latents")
    caches = []
    cache_tensors = [k for k in tensors if k.startswith(("cache.", "window."))]
    if info.store_mode not in ("recompute", "cache") or bool(cache_tensors) != (info.store_mode == "cache"):
        raise ValueError(f"store mode {info.store_mode!r} with {len(cache_tensors)} source cache tensors")
    if info.store_mode == "cache":
        for k, frames in enumerate([len(s.frames) for s in subs] or [info.frames]):
            prefix = f"window.{k}." if subs else ""
            cache = SourceCache(frames, info.temporal_mode, info.temporal_min_channels, info.cache_steps,
                                max_query=info.fuse_max_query)
            cache.load_tensors({n[len(prefix):]: v for n, v in tensors.items() if n.startswith(prefix + "cache.")})
            caches.append(cache)
        if sum(len(c.tensors()) for c in caches) != len(cache_tensors):
            raise ValueError("source cache tensors that belong to no sub-video of the store")
    store = AttentionStore(info, tensors["sigmas"], tensors["unet_inputs"], tensors["source_context"], tensors["cross_maps"],
                conds, None if subs or not caches else caches[0], window_caches=caches if subs else [],
                anchor_latents=tensors.get("anchor_latents"), inverted_latent=tensors.get("inverted_latent"),
                inverted_noise=tensors.get("inverted_noise"), clean_latent=tensors.get("clean_latent"))
    store.check_consistent()
    return store
