#!/usr/bin/env python
"""FateZero in ComfyUI: time and memory of the pack against plain ComfyUI sampling and
against the original FateZero attention store (issue 5).

One run, one model, one video size, frame count and step count, side by side:

1. plain ComfyUI sampling: core ``KSamplerAdvanced`` (ddim, ddim_uniform, CFG 7.5,
   add_noise disable) on the un-patched MODEL: the baseline;
2. the pack: ``FateZeroDDIMInversion``, then fused sampling (``FateZeroAttentionFusion``
   patched MODEL + ``KSamplerAdvanced``) without and with ``FateZeroBlendMask``, all
   called in-process from ComfyUI's ``NODE_CLASS_MAPPINGS``, CLIP from the checkpoint,
   CONDITIONING from core ``CLIPTextEncode``;
3. the original FateZero store (every self- and cross-attention map at query length
   <= 32x32, every inversion step, fp16) computed exactly from the shapes of the UNet in
   use, checked once by really allocating it for a small case.

Run ``python bench/bench_fatezero.py --help`` (or ``make bench``). Results: a table on
stdout and ``bench/results/<timestamp>.json``. Random weights: the numbers are about
cost, never about edit quality.
"""
from __future__ import annotations

import argparse
import cProfile
import ctypes
import gc
import json
import math
import os
import platform
import pstats
import re
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[1]
RESULTS_DIR = PACK_DIR / "bench" / "results"
sys.path.insert(0, str(PACK_DIR / "tests"))

MAX_QUERY = 32 * 32        # the original stores (and the pack fuses) layers with at most 32x32 queries
CONTEXT_TOKENS = 77        # SD1 CLIP window
LATENT_CHANNELS = 4
# frames of keys each frame's self-attention sees, per spatio-temporal mode (FATEZERO.md section 4)
KEY_FRAMES = {"per-frame": 1, "middle": 1, "current+middle": 2, "first+previous": 2}

SOURCE_PROMPT = "a silver jeep driving down a curvy road in the countryside"
TARGET_PROMPT = "watercolor painting of a silver jeep driving down a curvy road in the countryside"
REWEIGHT = "watercolor:10"
BLEND_WORDS = "silver, jeep"

# UNets built for the bench (random weights); "checkpoint" is the tests' shallow SD1.5 checkpoint.
SD15_UNET = {  # Stable Diffusion 1.5's real layout: 16 transformer blocks, 860M parameters
    "model_channels": 320, "channel_mult": [1, 2, 4, 4], "num_res_blocks": [2, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "transformer_depth_output": [1] * 9 + [0] * 3,
    "transformer_depth_middle": 1,
}
SD15_LITE_UNET = {  # SD1.5's four levels and widths, one ResNet per level (11 transformer blocks)
    "model_channels": 320, "channel_mult": [1, 2, 4, 4], "num_res_blocks": [1, 1, 1, 1],
    "transformer_depth": [1, 1, 1, 0], "transformer_depth_output": [1] * 6 + [0] * 2,
    "transformer_depth_middle": 1,
}
UNETS = {"checkpoint": None, "sd15-lite": SD15_LITE_UNET, "sd15": SD15_UNET}

MB = 1024 ** 2
GB = 1024 ** 3


# ======================================================================================
# ComfyUI in-process
# ======================================================================================
def import_comfy(device: str) -> None:
    """ComfyUI's modules, with ``--cpu`` unless a CUDA device is wanted and present."""
    import torch
    use_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    root = os.environ.get("COMFYUI_PATH")
    if not root:
        sys.exit("COMFYUI_PATH is not set: run `make host` and `source .host/env.sh` (or use `make bench`).")
    if root not in sys.path:
        sys.path.insert(0, root)
    argv, sys.argv = sys.argv, [sys.argv[0]] + (["--cpu"] if use_cpu else [])
    try:
        import comfy.options
        comfy.options.enable_args_parsing()
        import comfy.cli_args  # noqa: F401
        import utils.extra_config  # noqa: F401  (main.py's import order)
        import server  # noqa: F401
    finally:
        sys.argv = argv


def call_node(node, **inputs):
    """Call a node's FUNCTION as ComfyUI would, by input name; required inputs not given take
    their INPUT_TYPES default (so new inputs of the pack's nodes keep the bench running)."""
    spec = type(node).INPUT_TYPES()
    kwargs = dict(inputs)
    for name, (kind, *opts) in spec.get("required", {}).items():
        if name in kwargs:
            continue
        opts = opts[0] if opts else {}
        if "default" in opts:
            kwargs[name] = opts["default"]
        elif isinstance(kind, (list, tuple)) and kind:
            kwargs[name] = kind[0]
        else:
            raise TypeError(f"{type(node).__name__}: no value for required input '{name}'")
    return getattr(node, type(node).FUNCTION)(**kwargs)


@dataclass
class Env:
    pack: object
    nodes: object
    model: object      # ModelPatcher
    clip: object
    device: object
    model_desc: str


def checkpoint_path(args) -> Path:
    if args.ckpt:
        return Path(args.ckpt)
    import sd1_models
    cache = Path(os.environ.get("FATEZERO_TEST_CACHE", PACK_DIR / ".host" / "cache"))
    return sd1_models.sd15_checkpoint(cache / "checkpoints")


def random_unet_patcher(widths: dict, seed: int = 0):
    """A random-weight SD1.5-architecture UNet in ComfyUI's BaseModel/ModelPatcher, dtype as
    ComfyUI's loader would pick it for this device."""
    import torch
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    import sd1_models

    config = comfy.supported_models.SD15(sd1_models._unet_config(widths))
    unet_dtype = mm.unet_dtype(supported_dtypes=config.supported_inference_dtypes)
    config.set_inference_dtype(unet_dtype, mm.unet_manual_cast(unet_dtype, mm.get_torch_device(),
                                                               config.supported_inference_dtypes))
    model = config.get_model({})
    sd1_models.init_random_(model.diffusion_model, seed)
    with torch.no_grad():
        model.diffusion_model.out[-1].weight.mul_(0.1)  # smooth enough to invert (as tests/sd1_models.py)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def load_env(args) -> Env:
    import host
    import comfy.model_management as mm
    import comfy.sd
    import comfy.utils
    pack, nodes = host.load_pack_in_process()
    comfy.utils.PROGRESS_BAR_ENABLED = args.progress
    ckpt = checkpoint_path(args)
    model, clip = comfy.sd.load_checkpoint_guess_config(str(ckpt), output_vae=False)[:2]
    desc = f"checkpoint {ckpt.name}"
    if args.unet != "checkpoint":
        model = random_unet_patcher(UNETS[args.unet])
        desc = f"{args.unet} UNet (random weights), CLIP from {ckpt.name}"
    return Env(pack, nodes, model, clip, mm.get_torch_device(), desc)


# ======================================================================================
# The UNet's attention layout, from its modules
# ======================================================================================
def attention_layout(dm, latent_hw: tuple[int, int]) -> list:
    """Every transformer block with its query size and channels: the pack's own reader
    (``fatezero_attn/layout.py``, ``AttnLayer``)."""
    import host
    return host.load_pack_in_process()[0].fatezero_attn.layout.attention_layout(dm, latent_hw)


def layout_summary(layers: list) -> str:
    by_res = Counter((l.h, l.w, l.channels) for l in layers)
    return ", ".join(f"{n}x {h}x{w}/{c}ch" for (h, w, c), n in sorted(by_res.items(), reverse=True))


# ======================================================================================
# Store sizes, computed exactly from the shapes
# ======================================================================================
def original_store(layers: list, frames: int, steps: int, mode: str, min_channels: int,
                   context_tokens: int = CONTEXT_TOKENS, max_query: int = MAX_QUERY, bytes_per: int = 2) -> dict:
    """The authors' store: every self/cross map of every layer with q <= max_query, every
    inversion step, fp16. Self maps ``[frames*heads, q, key_frames*q]``, cross ``[frames*heads, q, 77]``."""
    shapes: list[tuple[str, tuple[int, int, int]]] = []
    for l in layers:
        if l.q > max_query:
            continue
        kf = KEY_FRAMES[mode] if (mode != "per-frame" and l.channels >= min_channels) else 1
        shapes.append(("self", (frames * l.heads, l.q, kf * l.q)))
        shapes.append(("cross", (frames * l.heads, l.q, context_tokens)))
    per_step = {"self": 0, "cross": 0}
    for kind, s in shapes:
        per_step[kind] += math.prod(s) * bytes_per
    total = (per_step["self"] + per_step["cross"]) * steps
    return {"mode": mode, "min_channels": min_channels, "frames": frames, "steps": steps,
            "layers_stored": len(shapes) // 2, "layers_total": len(layers),
            "self_bytes": per_step["self"] * steps, "cross_bytes": per_step["cross"] * steps,
            "bytes": total, "bytes_per_frame_step": total / (frames * steps),
            "map_shapes_per_step": shapes}


def blend_level_hw(layers: list, latent_hw: tuple[int, int]) -> tuple[int, int]:
    """The pack captures cross maps where the layer is 1/4 of the latent (sd_unet.SDUNet.is_blend_layer)."""
    for l in layers:
        if round(latent_hw[0] / l.h) == 4:
            return l.h, l.w
    return 0, 0


def pack_store(layers: list, frames: int, latent_hw: tuple[int, int], steps: int,
               context_tokens: int = CONTEXT_TOKENS) -> dict:
    """The pack's store (fatezero_attn/store.py): sigmas fp32 [steps+1], trajectory fp32
    [steps, frames, 4, h, w], source context fp32 [1, 77, dim], the inversion call's conditioning
    (a text-only prompt: one row, fp32 [1, 77, dim]), cross maps fp32 [steps, frames, h/4, w/4, 77] and
    the inverted latent fp32 [frames, 4, h, w] (Load Attention Store's latent output)."""
    h, w = latent_hw
    bh, bw = blend_level_hw(layers, latent_hw)
    dim = layers[0].context_dim
    parts = {
        "sigmas": (steps + 1) * 4,
        "trajectory": steps * frames * LATENT_CHANNELS * h * w * 4,
        "source_context": context_tokens * dim * 4,
        "source_conds": context_tokens * dim * 4,
        "cross_maps": steps * frames * bh * bw * context_tokens * 4,
        "inverted_latent": frames * LATENT_CHANNELS * h * w * 4,
    }
    total = sum(parts.values())
    return {"frames": frames, "steps": steps, "latent_hw": [h, w], "parts": parts, "bytes": total,
            "bytes_per_frame_step": total / (frames * steps), "cross_maps_shape": [steps, frames, bh, bw, context_tokens]}


def meta_unet(widths: dict):
    """The module tree of a UNet without allocating its weights (for the layout only)."""
    import comfy.ldm.modules.diffusionmodules.openaimodel as openaimodel
    import comfy.ops
    import sd1_models
    return openaimodel.UNetModel(**sd1_models._unet_config(widths), operations=comfy.ops.disable_weight_init,
                                 device="meta")


# ======================================================================================
# Measuring a phase: wall time, peak RSS (sampling thread + kernel high-water mark), GPU peak
# ======================================================================================
def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def _read_hwm() -> int | None:
    try:
        m = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
        return int(m.group(1)) * 1024 if m else None
    except OSError:
        return None


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class Meter:
    """``with Meter(device) as m: ...`` -> m.result: seconds, peak/start RSS, GPU peak."""

    def __init__(self, device, interval: float = 0.005):
        import psutil
        self.proc = psutil.Process()
        self.device = device
        self.interval = interval
        self.result: dict = {}

    def _sample(self):
        while not self._stop.is_set():
            self._peak = max(self._peak, self.proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self):
        import torch
        gc.collect()
        _malloc_trim()
        self._cuda = self.device.type == "cuda"
        if self._cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._gpu_start = torch.cuda.memory_allocated(self.device)
        self._start_rss = self.proc.memory_info().rss
        self._hwm = _reset_hwm()
        self._peak = self._start_rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self._load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        self._cpu0 = time.process_time()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        import torch
        if self._cuda:
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - self._t0
        cpu_seconds = time.process_time() - self._cpu0
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self.proc.memory_info().rss)
        hwm = _read_hwm() if self._hwm else None
        peak = max(self._peak, hwm or 0)
        self.result = {"seconds": seconds, "cpu_seconds": cpu_seconds,
                       "load_average": [self._load0, os.getloadavg()[0] if hasattr(os, "getloadavg") else None],
                       "start_rss": self._start_rss, "peak_rss_sampled": self._peak,
                       "peak_rss_kernel": hwm, "peak_rss": peak, "peak_rss_delta": peak - self._start_rss}
        if self._cuda:
            self.result.update(gpu_peak=torch.cuda.max_memory_allocated(self.device),
                               gpu_peak_delta=torch.cuda.max_memory_allocated(self.device) - self._gpu_start)
        return False


class UNetCounter:
    """A transparent UNet wrapper (set under the pack's own) counting calls, rows and UNet time."""

    def __init__(self, device):
        self.device = device
        self.reset()

    def __deepcopy__(self, memo):
        return self  # ModelPatcher.clone() deep-copies model_options; keep counting into this one

    def reset(self):
        self.calls = self.rows = 0
        self.seconds = 0.0

    def __call__(self, apply_model, args):
        import torch
        t0 = time.perf_counter()
        try:  # the pack's source pass ends early by an exception: count it too
            return apply_model(args["input"], args["timestep"], **args["c"])
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.seconds += time.perf_counter() - t0
            self.calls += 1
            self.rows += args["input"].shape[0]

    def snapshot(self) -> dict:
        return {"unet_calls": self.calls, "unet_rows": self.rows, "unet_seconds": self.seconds}


# ======================================================================================
# The phases
# ======================================================================================
class Bench:
    def __init__(self, env: Env, args):
        self.env = env
        self.args = args
        nm = env.pack.NODE_CLASS_MAPPINGS
        self.inversion_node = nm["FateZeroDDIMInversion"]()
        self.fusion_node = nm["FateZeroAttentionFusion"]()
        self.blend_node = nm["FateZeroBlendMask"]()
        self.ksampler = env.nodes.KSamplerAdvanced()
        enc = env.nodes.CLIPTextEncode()
        self.source_cond = enc.encode(env.clip, SOURCE_PROMPT)[0]
        self.target_cond = enc.encode(env.clip, TARGET_PROMPT)[0]
        self.negative = enc.encode(env.clip, "")[0]
        self.counter = UNetCounter(env.device)
        self.model = env.model.clone()  # every phase starts from this MODEL (+ the counting wrapper)
        self.model.set_model_unet_function_wrapper(self.counter)

    @staticmethod
    def video_latent(frames: int, size: int, seed: int = 0):
        """A video-like latent: one random image plus small per-frame changes (frames x 4 x size/8 x size/8)."""
        import torch
        g = torch.Generator().manual_seed(seed)
        base = torch.randn(1, 4, size // 8, size // 8, generator=g)
        return {"samples": base + 0.3 * torch.randn(frames, 4, size // 8, size // 8, generator=g)}

    def _sample(self, model, latent, steps):
        return self.ksampler.sample(model, "disable", 0, steps, 7.5, "ddim", "ddim_uniform", self.target_cond,
                                    self.negative, latent, 0, 10000, "disable")[0]

    def _measure(self, fn):
        self.counter.reset()
        with Meter(self.env.device) as m:
            out = fn()
        return out, {**m.result, **self.counter.snapshot()}

    def baseline(self, latent, steps):
        return self._measure(lambda: self._sample(self.model, latent, steps))

    def inversion(self, latent, steps, store_mode: str = "recompute"):
        a = self.args
        def run():
            return call_node(self.inversion_node, model=self.model, source_conditioning=self.source_cond,
                             latent=latent, steps=steps, temporal_mode=a.temporal_mode,
                             temporal_min_channels=a.temporal_min_channels, video_groupnorm=not a.no_video_groupnorm,
                             store_mode=store_mode, cache_replace_steps=max(a.cross_replace, a.self_replace))
        (inverted, store, *_), r = self._measure(run)
        r.update(store_bytes=store.nbytes(), store_bytes_per_frame_step=store.nbytes() / (store.info.frames * store.info.steps))
        return inverted, store, r

    def fused(self, inverted, store, steps, blend: bool, measure: bool = True):
        a = self.args
        def run():
            t0 = time.perf_counter()
            extra = {}
            if blend:
                extra["blend_mask"] = call_node(self.blend_node, attention_store=store, clip=self.env.clip,
                                                source_prompt=SOURCE_PROMPT, blend_words=BLEND_WORDS, tau=a.tau)[0]
            patched = call_node(self.fusion_node, model=self.model, attention_store=store, clip=self.env.clip,
                                source_prompt=SOURCE_PROMPT, target_prompt=TARGET_PROMPT,
                                cross_replace_steps=a.cross_replace, self_replace_steps=a.self_replace,
                                mapping="auto", reweight=REWEIGHT, cross_replace_words="", **extra)[0]
            nodes_s = time.perf_counter() - t0
            return self._sample(patched, inverted, steps), nodes_s
        if not measure:
            return run()[0], {}
        (out, nodes_s), r = self._measure(run)
        r.update(nodes_seconds=nodes_s, store_bytes=store.nbytes(),
                 store_bytes_per_frame_step=store.nbytes() / (store.info.frames * store.info.steps))
        return out, r

    def temporal_only(self, latent, steps):
        """Plain sampling through the pack's patch without fusion (spatio-temporal attention +
        video GroupNorm with the inversion's settings): separates their cost from fusion's."""
        a = self.args
        node = self.env.pack.NODE_CLASS_MAPPINGS["FateZeroSpatioTemporalAttention"]()
        def run():
            patched = call_node(node, model=self.model, temporal_mode=a.temporal_mode,
                                temporal_min_channels=a.temporal_min_channels,
                                video_groupnorm=not a.no_video_groupnorm)[0]
            return self._sample(patched, latent, steps)
        return self._measure(run)



def materialise_original(bench: Bench, size: int, frames: int, steps: int, mode: str, min_channels: int) -> dict:
    """Run an inversion-like pass (CFG 1, source prompt only) through a clone of the UNet whose
    attention keeps every map the original keeps, as fp16 CPU tensors; sum their bytes."""
    import torch
    env = bench.env
    temporal = env.pack.fatezero_attn.temporal  # the pack's frame gathering: the real spatio-temporal keys
    model = env.model.clone()
    maps: list[tuple[str, tuple[int, ...], torch.Tensor]] = []
    calls = [0]

    def attention(q, k, v, heads):
        b, nq, inner = q.shape
        d = inner // heads
        qh = q.view(b, nq, heads, d).transpose(1, 2)
        kh = k.view(b, -1, heads, d).transpose(1, 2)
        vh = v.view(b, -1, heads, d).transpose(1, 2)
        p = (qh @ kh.transpose(-1, -2) * d ** -0.5).softmax(-1)
        return p, (p @ vh).transpose(1, 2).reshape(b, nq, inner)

    def keep(kind, p):
        b, heads, nq, nk = p.shape
        if nq <= MAX_QUERY:
            t = p.reshape(b * heads, nq, nk).to("cpu", torch.float16, copy=True)
            maps.append((kind, tuple(t.shape), t))

    def attn1(q, k, v, extra):
        chunk = q.shape[0] // len(extra["cond_or_uncond"])
        if mode != "per-frame" and q.shape[-1] >= min_channels:
            k, v = temporal.gather_frames(k, chunk, mode), temporal.gather_frames(v, chunk, mode)
        p, out = attention(q, k, v, extra["n_heads"])
        keep("self", p)
        return out

    def attn2(q, k, v, extra):
        p, out = attention(q, k, v, extra["n_heads"])
        keep("cross", p)
        return out

    def count(apply_model, args):
        calls[0] += 1
        return apply_model(args["input"], args["timestep"], **args["c"])

    dm = model.model.diffusion_model
    for l in attention_layout(dm, (size // 8, size // 8)):
        model.set_model_attn1_replace(attn1, l.block, l.number, l.depth)
        model.set_model_attn2_replace(attn2, l.block, l.number, l.depth)
    model.set_model_unet_function_wrapper(count)
    latent = bench.video_latent(frames, size, seed=1)
    with Meter(env.device) as m:
        bench.ksampler.sample(model, "disable", 0, steps, 1.0, "ddim", "ddim_uniform", bench.source_cond,
                              bench.source_cond, latent, 0, 10000, "disable")
    allocated = sum(t.numel() * t.element_size() for _, _, t in maps)
    layers = attention_layout(dm, (size // 8, size // 8))
    formula = original_store(layers, frames, calls[0], mode, min_channels)
    got = Counter((kind, shape) for kind, shape, _ in maps)
    want = Counter()  # layers with equal shapes add up: compare multiplicities
    for kind, shape in formula["map_shapes_per_step"]:
        want[(kind, shape)] += calls[0]
    maps.clear()
    return {"size": size, "frames": frames, "steps": calls[0], "mode": mode, "min_channels": min_channels,
            "maps": sum(got.values()), "allocated_bytes": allocated, "formula_bytes": formula["bytes"],
            "shapes_match": got == want, "match": allocated == formula["bytes"] and got == want,
            "seconds": m.result["seconds"], "peak_rss_delta": m.result["peak_rss_delta"]}


# ======================================================================================
# Reporting helpers
# ======================================================================================
def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, div in (("GB", GB), ("MB", MB), ("KB", 1024)):
        if abs(n) >= div:
            return f"{n / div:.3g} {unit}" if n / div < 100 else f"{n / div:.0f} {unit}"
    return f"{n:.0f} B"


def table(rows: list[list], header: list[str]) -> str:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in cells[1:]])


def median_phase(runs: list[dict]) -> dict:
    """Median of every numeric field over repeats (the list of runs is kept alongside)."""
    out = {}
    for key in runs[0]:
        vals = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
        out[key] = statistics.median(vals) if vals else runs[0][key]
    return out


def linear_fit(xs: list[float], ys: list[float]) -> dict:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    icpt = my - slope * mx
    ss_res = sum((y - (icpt + slope * x)) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - my) ** 2 for y in ys)
    return {"slope": slope, "intercept": icpt, "r2": 1 - ss_res / ss_tot if ss_tot else 1.0,
            "max_rel_residual": max(abs(y - (icpt + slope * x)) / max(abs(y), 1) for x, y in zip(xs, ys))}


def environment(env: Env) -> dict:
    import torch
    try:
        rev = subprocess.run(["git", "-C", str(PACK_DIR), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(PACK_DIR), "status", "--porcelain"], capture_output=True,
                                    text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        rev, dirty = "", False
    try:
        import comfyui_version
        comfy_version = comfyui_version.__version__
    except ImportError:
        comfy_version = "?"
    from comfy.ldm.modules.attention import optimized_attention
    info = {"python": platform.python_version(), "torch": torch.__version__, "comfyui": comfy_version,
            "device": str(env.device), "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "attention": optimized_attention.__name__, "pack_git": rev + ("+dirty" if dirty else ""),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "model": env.model_desc, "unet_dtype": str(env.model.model.get_dtype())}
    if env.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(env.device)
    return info


def profile_fused(bench: Bench, inverted, store, steps: int, out_dir: Path, stamp: str) -> dict:
    """One fused sampling under cProfile: where the time goes (not part of the timings)."""
    return {"fused": _profile_one(bench, inverted, store, steps, out_dir, stamp, blend=False),
            "fused_blend": _profile_one(bench, inverted, store, steps, out_dir, stamp, blend=True)}


def _profile_one(bench: Bench, inverted, store, steps: int, out_dir: Path, stamp: str, blend: bool) -> dict:
    prof = cProfile.Profile()
    prof.enable()
    bench.fused(inverted, store, steps, blend=blend, measure=False)
    prof.disable()
    path = out_dir / f"{stamp}-fused{'-blend' if blend else ''}.prof"
    prof.dump_stats(str(path))
    stats = pstats.Stats(prof)
    total = max(stats.total_tt, 1e-9)
    rows = []
    for (file, line, func), (cc, nc, tt, ct, _) in stats.stats.items():
        rows.append({"function": f"{Path(file).name}:{line}({func})" if file != "~" else func,
                     "file": file, "calls": nc, "tottime": tt, "cumtime": ct})
    top_self = sorted(rows, key=lambda r: -r["tottime"])[:15]
    pack_rows = sorted([r for r in rows if "fatezero_attn" in r["file"]], key=lambda r: -r["cumtime"])[:15]
    for r in top_self + pack_rows:
        r["share_of_total"] = r["tottime"] / total
    # where a fused sampling's time goes: the source row's own UNet calls, the fusion kernels,
    # and the dispatcher's own work (row bookkeeping, index copies; attention it calls excluded)
    pack = lambda func: [r for r in rows if "fatezero_attn" in r["file"] and r["function"].endswith(f"({func})")]
    cum = lambda func: sum(r["cumtime"] for r in pack(func))
    own = lambda func: sum(r["tottime"] for r in pack(func))
    shares = {"source_row": cum("_source_attention"),
              "fusion_kernels": cum("fused_self_attention") + cum("fused_cross_attention"),
              "dispatcher_own": sum(own(f) for f in ("_dispatch", "_dispatch_rows", "_unfused", "_source_layer",
                                                     "unet_wrapper", "_call", "attn1", "attn2", "_plain",
                                                     "_call_info", "gather_frames", "forward"))}
    return {"file": str(path), "total_seconds": total, "top_self_time": top_self, "pack_cumulative": pack_rows,
            "shares": {k: v / total for k, v in shares.items()}}


# ======================================================================================
# main
# ======================================================================================
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--size", type=int, default=256, help="frame width = height in pixels (multiple of 8)")
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=1, help="timed repeats of every phase; medians are reported")
    p.add_argument("--full", action="store_true",
                   help="the authors' case: 512x512, 8 frames, 50 steps, SD1.5's full UNet layout with random "
                        "weights (--unet sd15); sweeps over 2,4,8,16 frames and 256,384,512 px at 10 steps")
    p.add_argument("--unet", choices=list(UNETS), default="checkpoint",
                   help="'checkpoint': the tests' shallow SD1.5-detected checkpoint; 'sd15-lite': SD1.5's 4 levels "
                        "with one ResNet per level; 'sd15': SD1.5's exact UNet (860M parameters); the last two random")
    p.add_argument("--ckpt", help="an SD1.x .safetensors checkpoint to use instead of the random test checkpoint")
    p.add_argument("--device", choices=["auto", "cpu"], default="auto", help="auto: ComfyUI's device (CUDA if present)")
    p.add_argument("--temporal-mode", default="middle", choices=list(KEY_FRAMES))
    p.add_argument("--temporal-min-channels", type=int, default=640)
    p.add_argument("--no-video-groupnorm", action="store_true")
    p.add_argument("--cross-replace", type=float, default=0.8)
    p.add_argument("--self-replace", type=float, default=0.8)
    p.add_argument("--tau", type=float, default=0.3)
    p.add_argument("--sweep-frames", default="2,4,8,16", help="frame counts measured at --sweep-size ('' to skip)")
    p.add_argument("--sweep-sizes", default="128,192,256", help="sizes measured with 2 frames ('' to skip)")
    p.add_argument("--sweep-size", type=int, default=128)
    p.add_argument("--sweep-steps", type=int, default=4)
    p.add_argument("--verify-size", type=int, default=384,
                   help="size at which the original store is really allocated to check the formula")
    p.add_argument("--verify-frames", type=int, default=2)
    p.add_argument("--verify-steps", type=int, default=2)
    p.add_argument("--breakdown", action="store_true",
                   help="also time plain sampling through the pack's spatio-temporal patch (no fusion)")
    p.add_argument("--profile", action="store_true", help="cProfile one extra fused sampling (implies --breakdown)")
    p.add_argument("--no-cache", action="store_true", help="skip the cache store mode's rows")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--progress", action="store_true", help="show ComfyUI's progress bars")
    p.add_argument("--out", help="JSON path (default bench/results/<timestamp>.json)")
    args = p.parse_args(argv)
    if args.full:
        args.size, args.frames, args.steps = 512, 8, 50
        if args.unet == "checkpoint" and not args.ckpt:
            args.unet = "sd15"
        if args.sweep_sizes == p.get_default("sweep_sizes"):
            args.sweep_sizes = "256,384,512"
        if args.sweep_size == p.get_default("sweep_size"):
            args.sweep_size = 256
        if args.sweep_steps == p.get_default("sweep_steps"):
            args.sweep_steps = 10
    args.breakdown = args.breakdown or args.profile
    for name in ("size", "sweep_size", "verify_size"):
        if getattr(args, name) % 8:
            p.error(f"--{name.replace('_', '-')} must be a multiple of 8")
    return args


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    import_comfy(args.device)
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    log("loading ComfyUI, the pack and the model ...")
    env = load_env(args)
    bench = Bench(env, args)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out_path = Path(args.out) if args.out else RESULTS_DIR / f"{stamp}.json"
    dm = env.model.model.diffusion_model
    latent_hw = (args.size // 8, args.size // 8)
    layers = attention_layout(dm, latent_hw)
    report: dict = {"args": vars(args), "environment": environment(env),
                    "case": {"size": args.size, "frames": args.frames, "steps": args.steps,
                             "source_prompt": SOURCE_PROMPT, "target_prompt": TARGET_PROMPT, "reweight": REWEIGHT,
                             "blend_words": BLEND_WORDS, "layout": [asdict(l) for l in layers]}}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if env.device.type == "cpu" and load > 0.5 * (os.cpu_count() or 1):
        log(f"note: the machine is busy (load average {load:.1f} on {os.cpu_count()} cores); timings will be noisy: "
            "use --repeats 3 (medians) and consider --threads 1")
    log(f"{env.model_desc} on {env.device}; {len(layers)} transformer blocks at {args.size}px: {layout_summary(layers)}")

    # -- 3a. the formula, checked by allocating the original store for a small case -----------
    log(f"allocating the original store for {args.verify_frames} frames, {args.verify_size}px, {args.verify_steps} steps ...")
    verify = materialise_original(bench, args.verify_size, args.verify_frames, args.verify_steps, "current+middle",
                                  args.temporal_min_channels)
    report["original_store_check"] = verify
    log(f"  {verify['maps']} maps, allocated {verify['allocated_bytes']} B, formula {verify['formula_bytes']} B: "
        f"{'equal' if verify['match'] else 'DIFFERENT'}")

    # -- warm-up: model load, allocator, first-call costs --------------------------------------
    latent = bench.video_latent(args.frames, args.size)
    log("warm-up ...")
    bench.baseline(latent, 1)

    # -- 1+2. the timed phases, interleaved per repeat ----------------------------------------
    runs: dict[str, list[dict]] = {"baseline": [], "inversion": [], "fused": [], "fused_blend": []}
    if not args.no_cache:
        runs.update(inversion_cache=[], fused_cache=[], fused_blend_cache=[])
    if args.breakdown:
        runs["temporal_only"] = []
    inverted = store = None
    for r in range(args.repeats):
        log(f"repeat {r + 1}/{args.repeats}: plain KSamplerAdvanced ...")
        runs["baseline"].append(bench.baseline(latent, args.steps)[1])
        log(f"  {runs['baseline'][-1]['seconds']:.1f}s; FateZeroDDIMInversion ...")
        inverted, store, res = bench.inversion(latent, args.steps)
        runs["inversion"].append(res)
        log(f"  {res['seconds']:.1f}s; fused sampling ...")
        runs["fused"].append(bench.fused(inverted, store, store.info.steps, blend=False)[1])
        log(f"  {runs['fused'][-1]['seconds']:.1f}s; fused sampling with blend mask ...")
        runs["fused_blend"].append(bench.fused(inverted, store, store.info.steps, blend=True)[1])
        log(f"  {runs['fused_blend'][-1]['seconds']:.1f}s")
        if not args.no_cache:
            log("store_mode cache: FateZeroDDIMInversion ...")
            inverted_c, store_c, res = bench.inversion(latent, args.steps, "cache")
            runs["inversion_cache"].append(res)
            log(f"  {res['seconds']:.1f}s (cache {fmt_bytes(store_c.cache.nbytes())}); fused sampling ...")
            runs["fused_cache"].append(bench.fused(inverted_c, store_c, store_c.info.steps, blend=False)[1])
            log(f"  {runs['fused_cache'][-1]['seconds']:.1f}s; fused sampling with blend mask ...")
            runs["fused_blend_cache"].append(bench.fused(inverted_c, store_c, store_c.info.steps, blend=True)[1])
            log(f"  {runs['fused_blend_cache'][-1]['seconds']:.1f}s")
            del inverted_c, store_c
        if args.breakdown:
            runs["temporal_only"].append(bench.temporal_only(latent, args.steps)[1])
            log(f"  plain + spatio-temporal patch: {runs['temporal_only'][-1]['seconds']:.1f}s")
    steps = store.info.steps
    phases = {k: median_phase(v) for k, v in runs.items()}
    report["phases"] = {k: {"median": phases[k], "runs": v} for k, v in runs.items()}

    # -- 3b. the original store for this case, and the SD1.5 reference case ---------------------
    orig = original_store(layers, args.frames, steps, args.temporal_mode, args.temporal_min_channels)
    packf = pack_store(layers, args.frames, latent_hw, steps)
    report["store_bench_case"] = {"original": orig, "pack_formula": packf, "pack_measured": store.nbytes(),
                                  "pack_formula_matches": packf["bytes"] == store.nbytes()}
    sd15 = meta_unet(SD15_UNET)
    ref_layers = attention_layout(sd15, (64, 64))
    ref = {"layout": [asdict(l) for l in ref_layers], "transformer_blocks": len(ref_layers),
           "pack": pack_store(ref_layers, 8, (64, 64), 50),
           "original": {m: original_store(ref_layers, 8, 50, m, 640) for m in KEY_FRAMES}}
    ref["ratio"] = {m: ref["pack"]["bytes"] / o["bytes"] for m, o in ref["original"].items()}
    sc = env.pack.fatezero_attn.source_cache
    cached = sc.cached_steps(50, max(args.cross_replace, args.self_replace))
    ref["cache"] = {m: {"steps_cached": cached, "bytes": sc.estimate_bytes(ref_layers, 8, cached, m, 640, MAX_QUERY, 2)}
                    for m in KEY_FRAMES}  # fp16: the dtype of SD1.5 on a GPU
    for m, c in ref["cache"].items():
        c["total"] = c["bytes"] + ref["pack"]["bytes"]
        c["ratio"] = c["total"] / ref["original"][m]["bytes"]
    growth_frames = [{"frames": f, "pack": pack_store(ref_layers, f, (64, 64), 50)["bytes"],
                      "original": original_store(ref_layers, f, 50, args.temporal_mode, 640)["bytes"]}
                     for f in (2, 4, 8, 16, 32)]
    growth_res = []
    for px in (256, 384, 512, 768, 1024):
        ll = attention_layout(sd15, (px // 8, px // 8))
        growth_res.append({"size": px, "pack": pack_store(ll, 8, (px // 8, px // 8), 50)["bytes"],
                           "original": original_store(ll, 8, 50, args.temporal_mode, 640)["bytes"],
                           "original_layers_stored": original_store(ll, 8, 50, args.temporal_mode, 640)["layers_stored"]})
    ref["growth_frames"], ref["growth_size"] = growth_frames, growth_res
    report["store_sd15_512_8f_50s"] = ref
    del sd15

    # -- growth, measured at small sizes --------------------------------------------------------
    sweep = {"frames": [], "size": []}
    for f in ints(args.sweep_frames):
        log(f"frames sweep: {f} frames at {args.sweep_size}px, {args.sweep_steps} steps ...")
        lat = bench.video_latent(f, args.sweep_size)
        b = bench.baseline(lat, args.sweep_steps)[1]
        inv, st, i = bench.inversion(lat, args.sweep_steps)
        fu = bench.fused(inv, st, st.info.steps, blend=False)[1]
        ll = attention_layout(dm, (args.sweep_size // 8,) * 2)
        sweep["frames"].append({"frames": f, "size": args.sweep_size, "baseline": b, "inversion": i, "fused": fu,
                                "store_bytes": st.nbytes(),
                                "original_bytes": original_store(ll, f, st.info.steps, args.temporal_mode,
                                                                 args.temporal_min_channels)["bytes"]})
    for px in ints(args.sweep_sizes):
        log(f"size sweep: {px}px, 2 frames, {args.sweep_steps} steps ...")
        lat = bench.video_latent(2, px)
        b = bench.baseline(lat, args.sweep_steps)[1]
        inv, st, i = bench.inversion(lat, args.sweep_steps)
        fu = bench.fused(inv, st, st.info.steps, blend=False)[1]
        ll = attention_layout(dm, (px // 8,) * 2)
        sweep["size"].append({"frames": 2, "size": px, "baseline": b, "inversion": i, "fused": fu,
                              "store_bytes": st.nbytes(),
                              "original_bytes": original_store(ll, 2, st.info.steps, args.temporal_mode,
                                                               args.temporal_min_channels)["bytes"]})
    if len(sweep["frames"]) >= 2:
        xs = [s["frames"] for s in sweep["frames"]]
        sweep["frames_fit"] = {ph: linear_fit(xs, [s[ph]["peak_rss_delta"] / MB for s in sweep["frames"]])
                               for ph in ("baseline", "inversion", "fused")}
        if env.device.type == "cuda":
            for ph in ("baseline", "inversion", "fused"):
                sweep["frames_fit"][ph + "_gpu"] = linear_fit(xs, [s[ph]["gpu_peak_delta"] / MB for s in sweep["frames"]])
    report["sweeps"] = sweep

    if args.profile:
        log("profiling one fused sampling without and with blend mask (cProfile) ...")
        report["profile"] = profile_fused(bench, inverted, store, steps, RESULTS_DIR, stamp)

    # -- targets ---------------------------------------------------------------------------------
    base_s = phases["baseline"]["seconds"]
    window = (phases["fused"]["unet_rows"] - phases["baseline"]["unet_rows"]) / args.frames  # steps with a source row
    rows_ratio = phases["fused"]["unet_rows"] / phases["baseline"]["unet_rows"]
    base_cpu = phases["baseline"]["cpu_seconds"]
    fit = sweep.get("frames_fit", {}).get("fused")
    targets = [
        {"target": f"pack store <= 1% of the original (SD1.5, 512px, 8 frames, 50 steps, mode {args.temporal_mode})",
         "value": ref["ratio"][args.temporal_mode], "limit": 0.01},
        {"target": "pack store <= 1% of the original (this run's case)", "value": store.nbytes() / orig["bytes"], "limit": 0.01},
    ]
    # issue 12's targets are for SD1.5's layout at 512px (--unet sd15-lite or sd15 --size 512); issue 15's for cache mode
    time_targets = [("fused", "fused sampling time <= 1.25x plain sampling", 1.25),
                    ("fused_blend", "fused sampling with blend mask <= 1.30x plain", 1.30),
                    ("inversion", "inversion <= 0.52x one plain CFG sampling pass", 0.52)]
    if "fused_cache" in phases:
        time_targets += [("fused_cache", "store_mode cache: fused sampling <= 1.10x plain", 1.10),
                         ("fused_blend_cache", "store_mode cache: fused + blend mask <= 1.10x plain", 1.10)]
    for key, text, limit in time_targets:
        paired = statistics.median(f["seconds"] / b["seconds"] for f, b in zip(runs[key], runs["baseline"]))
        targets.append({"target": text, "value": phases[key]["seconds"] / base_s, "limit": limit,
                        "value_cpu": phases[key]["cpu_seconds"] / base_cpu, "value_paired": paired})
    mem = "gpu_peak_delta" if env.device.type == "cuda" else "peak_rss_delta"
    for key in ("fused", "fused_blend", "fused_cache"):
        if key in phases:
            targets.append({"target": f"{key}: peak memory growth ({'GPU' if mem.startswith('gpu') else 'RSS'}) "
                                      "<= 1.35x plain sampling's",
                            "value": phases[key][mem] / max(phases["baseline"][mem], 1), "limit": 1.35})
    targets.append({"target": f"store_mode cache, SD1.5 512px 8 frames 50 steps (fp16, mode {args.temporal_mode}): "
                              "store + cache <= 25% of the original's maps",
                    "value": ref["cache"][args.temporal_mode]["ratio"], "limit": 0.25})
    if fit:
        targets.append({"target": "fused peak RSS linear in frames (R^2 of a line through the sweep >= 0.98)",
                        "value": fit["r2"], "limit": 0.98, "higher_is_better": True})
    for t in targets:
        ok = (lambda v: v >= t["limit"]) if t.get("higher_is_better") else (lambda v: v <= t["limit"])
        t["met"] = ok(t["value"])
        if "value_cpu" in t and ok(t["value_cpu"]) != t["met"]:
            t["noisy"] = True  # wall and CPU time disagree: the machine was busy
    report["targets"] = targets
    report["fusion"] = {"steps_with_source_row": window, "steps": steps, "rows_ratio_fused_to_plain": rows_ratio,
                        "per_row_seconds": {k: phases[k]["unet_seconds"] / max(phases[k]["unet_rows"], 1) for k in phases}}

    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=1, default=str))
    print_report(report, args, out_path)
    return 0


def print_report(rep: dict, args, out_path: Path) -> None:
    ph = {k: v["median"] for k, v in rep["phases"].items()}
    base = ph["baseline"]["seconds"]
    gpu = "gpu_peak" in ph["baseline"]
    case = rep["case"]
    env = rep["environment"]
    print()
    print(f"FateZero bench: {env['model']}, {env['device']} ({env['torch_threads']} threads, attention "
          f"{env['attention']}), {case['size']}x{case['size']}, {case['frames']} frames, {case['steps']} steps, "
          f"median of {args.repeats} run(s)")
    names = {"baseline": "plain KSamplerAdvanced (baseline)", "inversion": "FateZeroDDIMInversion",
             "fused": "fused sampling", "fused_blend": "fused sampling + blend mask",
             "temporal_only": "plain + pack's spatio-temporal patch",
             "inversion_cache": "FateZeroDDIMInversion, store_mode cache", "fused_cache": "fused sampling, cache",
             "fused_blend_cache": "fused + blend mask, cache"}
    header = ["phase", "wall s", "x base", "cpu s", "x base cpu", "UNet rows", "s/row", "peak RSS", "dRSS"] + (["GPU peak"] if gpu else []) + ["store", "store/frame-step"]
    rows = []
    for k, p in ph.items():
        rows.append([names[k], f"{p['seconds']:.1f}", f"{p['seconds'] / base:.2f}", f"{p['cpu_seconds']:.1f}",
                     f"{p['cpu_seconds'] / ph['baseline']['cpu_seconds']:.2f}", f"{p['unet_rows']:g}",
                     f"{p['unet_seconds'] / max(p['unet_rows'], 1):.3f}", fmt_bytes(p["peak_rss"]),
                     fmt_bytes(p["peak_rss_delta"])] + ([fmt_bytes(p.get("gpu_peak_delta"))] if gpu else [])
                    + [fmt_bytes(p.get("store_bytes")), fmt_bytes(p.get("store_bytes_per_frame_step"))])
    o = rep["store_bench_case"]["original"]
    rows.append([f"original store (computed, {o['layers_stored']}/{o['layers_total']} layers)", "-", "-", "-", "-",
                 "-", "-", "-", "-"] + (["-"] if gpu else []) + [fmt_bytes(o["bytes"]), fmt_bytes(o["bytes_per_frame_step"])])
    print(table(rows, header))
    chk = rep["original_store_check"]
    print(f"original store formula check: {chk['maps']} fp16 maps allocated ({chk['frames']} frames, {chk['size']}px, "
          f"{chk['steps']} steps, {chk['mode']}): {chk['allocated_bytes']} B vs formula {chk['formula_bytes']} B "
          f"-> {'EQUAL' if chk['match'] else 'MISMATCH'}; pack store formula vs store.nbytes(): "
          f"{'EQUAL' if rep['store_bench_case']['pack_formula_matches'] else 'MISMATCH'}")
    fz = rep["fusion"]
    print(f"fusion window: {fz['steps_with_source_row']:g}/{fz['steps']} edit steps carry the source row -> "
          f"{fz['rows_ratio_fused_to_plain']:.2f}x the UNet rows of plain sampling")

    ref = rep["store_sd15_512_8f_50s"]
    print()
    blocks = {}
    for l in ref["layout"]:
        blocks.setdefault(l["block"], []).append(str(l["number"]))
    print(f"Store, SD1.5 UNet ({ref['transformer_blocks']} transformer blocks: "
          + "; ".join(f"{b} {','.join(n)}" for b, n in blocks.items())
          + f"; heads {ref['layout'][0]['heads']}), 512x512, 8 frames, 50 steps;")
    print(f"original: fp16 maps at q <= 32x32 ({ref['original']['middle']['layers_stored']} blocks), every step, "
          "spatio-temporal keys in blocks of >= 640 channels:")
    p = ref["pack"]
    print(f"  pack: {fmt_bytes(p['bytes'])} = trajectory {fmt_bytes(p['parts']['trajectory'])} + cross maps "
          f"{fmt_bytes(p['parts']['cross_maps'])} {p['cross_maps_shape']} + context and conditioning "
          f"{fmt_bytes(p['parts']['source_context'] + p['parts']['source_conds'])}")
    rows = [[m, fmt_bytes(o["self_bytes"]), fmt_bytes(o["cross_bytes"]), fmt_bytes(o["bytes"]), f"{ref['ratio'][m] * 100:.3f}%"]
            for m, o in ref["original"].items()]
    print(table(rows, ["original, mode", "self maps", "cross maps", "total", "pack/original"]))
    print(table([[m, c["steps_cached"], fmt_bytes(c["bytes"]), fmt_bytes(c["total"]), f"{c['ratio'] * 100:.1f}%"]
                 for m, c in ref["cache"].items()],
                ["store_mode cache, mode", "steps cached", "cache (fp16)", "store + cache", "of original"]))
    print(table([[g["frames"], fmt_bytes(g["pack"]), fmt_bytes(g["original"])] for g in ref["growth_frames"]],
                ["frames (512px)", "pack", f"original ({args.temporal_mode})"]))
    print(table([[g["size"], fmt_bytes(g["pack"]), fmt_bytes(g["original"]), g["original_layers_stored"]] for g in ref["growth_size"]],
                ["size (8 frames)", "pack", f"original ({args.temporal_mode})", "layers kept"]))

    sw = rep["sweeps"]
    for key, label in (("frames", "frames"), ("size", "size px")):
        if not sw[key]:
            continue
        print()
        print(f"Measured growth ({args.sweep_steps} steps):")
        rows = []
        for s in sw[key]:
            rows.append([s[key if key == "frames" else "size"], f"{s['baseline']['seconds']:.1f}",
                         f"{s['inversion']['seconds']:.1f}", f"{s['fused']['seconds']:.1f}",
                         f"{s['fused']['seconds'] / s['baseline']['seconds']:.2f}",
                         fmt_bytes(s["baseline"]["peak_rss_delta"]), fmt_bytes(s["inversion"]["peak_rss_delta"]),
                         fmt_bytes(s["fused"]["peak_rss_delta"]), fmt_bytes(s["store_bytes"]), fmt_bytes(s["original_bytes"])])
        print(table(rows, [label, "plain s", "inv s", "fused s", "fused/plain", "plain dRSS", "inv dRSS", "fused dRSS",
                           "pack store", "original"]))
    if "frames_fit" in sw:
        print("peak dRSS vs frames, least-squares line: " + "; ".join(
            f"{ph}: {f['slope']:.1f} MB/frame + {f['intercept']:.0f} MB, R^2 {f['r2']:.3f}"
            for ph, f in sw["frames_fit"].items()))
        fr = sw["frames"]
        print("MB per added frame between sweep points: " + "; ".join(
            f"{ph}: " + ", ".join(f"{(b[ph]['peak_rss_delta'] - a[ph]['peak_rss_delta']) / MB / (b['frames'] - a['frames']):.0f}"
                                  for a, b in zip(fr, fr[1:])) for ph in ("baseline", "inversion", "fused")))

    for which, pr in rep.get("profile", {}).items():
        print()
        print(f"cProfile of one {names[which]} ({pr['total_seconds']:.1f}s, {pr['file']}), top self time:")
        print(table([[r["function"][:70], r["calls"], f"{r['tottime']:.2f}", f"{r['share_of_total'] * 100:.1f}%"]
                     for r in pr["top_self_time"]], ["function", "calls", "self s", "share"]))
        sh = pr["shares"]
        print(f"share of the fused sampling: source row {sh['source_row'] * 100:.1f}%, fusion kernels "
              f"{sh['fusion_kernels'] * 100:.1f}%, dispatcher's own work {sh['dispatcher_own'] * 100:.2f}%")
        print("the pack's functions, cumulative:")
        print(table([[r["function"][:70], r["calls"], f"{r['cumtime']:.2f}", f"{r['tottime']:.2f}"]
                     for r in pr["pack_cumulative"]], ["function", "calls", "cum s", "self s"]))

    print()
    print(table([[t["target"], f"{t['value']:.4g}", f"{t['value_cpu']:.4g}" if "value_cpu" in t else "",
                  f"{t['value_paired']:.4g}" if "value_paired" in t else "",
                  ("<= " if not t.get("higher_is_better") else ">= ") + f"{t['limit']:g}",
                  ("met" if t["met"] else "MISSED") + (" (cpu time disagrees: noisy)" if t.get("noisy") else "")]
                 for t in rep["targets"]], ["target", "value", "cpu time", "paired", "limit", ""]))
    print("value: ratio of median wall times; cpu time: of median process CPU times; paired: median of the per-repeat "
          "wall-time ratios (each phase against the baseline run just before it)")
    print(f"\nJSON: {out_path}")


if __name__ == "__main__":
    sys.exit(main())
