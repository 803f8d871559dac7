"""The benches' shared harness: ComfyUI and the pack in-process, the pack's algorithm modules (one
place), the options every measured bench takes, the phases' common part (the pack's nodes, the
prompts, a counted and metered MODEL) and the log.

Beside it: memory.py (measuring a phase), results.py (the run's environment, the result file),
report.py (tables, medians, fits), profiling.py (cProfile), estimate.py (Wan's GPU estimate).
Scripts: bench_sd.py, bench_wan.py, bench_windows.py, bench_preview.py.
"""
from __future__ import annotations

import importlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from memory import Meter, UNetCounter

BENCH_DIR = Path(__file__).resolve().parent
PACK_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
sys.path.insert(0, str(PACK_DIR / "tests"))  # the tests' host, models and checkpoints

# the edit every bench measures
SOURCE_PROMPT = "a silver jeep driving down a curvy road in the countryside"
TARGET_PROMPT = "watercolor painting of a silver jeep driving down a curvy road in the countryside"
REWEIGHT = "watercolor:10"
BLEND_WORDS = "silver, jeep"

# The pack's algorithm modules the benches read, by their paths in the pack: re-point them here when they move.
PACK_MODULES = {
    "defaults": "fatezero_attn.defaults",
    "dit": "fatezero_attn.families.dit",
    "layout": "fatezero_attn.families.sd_layout",
    "schedule": "fatezero_attn.edit.schedule",
    "source_cache": "fatezero_attn.store.source_cache",
    "store": "fatezero_attn.store.attention_store",
    "temporal": "fatezero_attn.edit.temporal",
}


class PackModules:
    """``PackModules(pack).store``: the module of PACK_MODULES, imported on first use, from ``pack`` (the
    package ComfyUI loaded: its classes are the nodes' own) or, without ComfyUI, from the pack's folder."""

    def __init__(self, pack=None):
        self._prefix = f"{pack.__name__}." if pack is not None else ""

    def __getattr__(self, name: str):
        if name not in PACK_MODULES:
            raise AttributeError(name)
        if not self._prefix and str(PACK_DIR) not in sys.path:
            sys.path.insert(0, str(PACK_DIR))
        return importlib.import_module(self._prefix + PACK_MODULES[name])


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


def start_comfy(device: str, threads: int = 0):
    """``import_comfy`` and torch's CPU threads (0: torch's default); returns torch."""
    import_comfy(device)
    import torch
    if threads:
        torch.set_num_threads(threads)
    return torch


def load_pack(progress: bool | None = None):
    """``(pack, nodes)``: the pack through ComfyUI's custom-node loader, and ComfyUI's nodes module;
    ``progress``: ComfyUI's progress bars on or off (None: as they are)."""
    import host
    pack, nodes = host.load_pack_in_process()
    if progress is not None:
        import comfy.utils
        comfy.utils.PROGRESS_BAR_ENABLED = progress
    return pack, nodes


def checkpoint_path(ckpt: str | None = None) -> Path:
    """``ckpt``, else the tests' random SD1.5-detected checkpoint (made on first use)."""
    if ckpt:
        return Path(ckpt)
    import models_sd1
    cache = Path(os.environ.get("FATEZERO_TEST_CACHE", PACK_DIR / ".host" / "cache"))
    return models_sd1.sd15_checkpoint(cache / "checkpoints")


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


class PhaseBench:
    """What every family's phases share: the pack's inversion, fusion and blend nodes, the prompts'
    CONDITIONING from core ``CLIPTextEncode``, and one MODEL with a counting wrapper that every
    phase starts from; ``_measure`` runs a phase under a Meter and the counter."""

    def __init__(self, env: Env, args, source: str, target: str):
        self.env, self.args = env, args
        nm = env.pack.NODE_CLASS_MAPPINGS
        self.inversion_node = nm["FateZeroDDIMInversion"]()
        self.fusion_node = nm["FateZeroAttentionFusion"]()
        self.blend_node = nm["FateZeroBlendMask"]()
        enc = env.nodes.CLIPTextEncode()
        self.source_cond = enc.encode(env.clip, source)[0]
        self.target_cond = enc.encode(env.clip, target)[0]
        self.negative = enc.encode(env.clip, "")[0]
        self.counter = UNetCounter(env.device)
        self.model = env.model.clone()  # every phase starts from this MODEL (+ the counting wrapper)
        self.model.set_model_unet_function_wrapper(self.counter)

    def _measure(self, fn):
        self.counter.reset()
        with Meter(self.env.device) as m:
            out = fn()
        return out, {**m.result, **self.counter.snapshot()}

    def fused_model(self, store, source: str, target: str, cross_replace: float, self_replace: float, reweight: str,
                    blend_words: str | None, tau: float, **fusion):
        """The fusion node's MODEL, with the blend node's mask first when ``blend_words`` is given."""
        extra = {}
        if blend_words is not None:
            extra["blend_mask"] = call_node(self.blend_node, attention_store=store, clip=self.env.clip,
                                            source_prompt=source, blend_words=blend_words, tau=tau)[0]
        return call_node(self.fusion_node, model=self.model, attention_store=store, clip=self.env.clip,
                         source_prompt=source, target_prompt=target, cross_replace_steps=cross_replace,
                         self_replace_steps=self_replace, mapping="auto", reweight=reweight, cross_replace_words="",
                         **fusion, **extra)[0]


# ======================================================================================
# The command line and the log
# ======================================================================================
def add_run_options(p, out_prefix: str = "", repeats: bool = True, allocator: bool = False,
                    progress: bool = True) -> None:
    """The options of a measured bench (``p``: a parser or an argument group)."""
    if repeats:
        p.add_argument("--repeats", type=int, default=1, help="timed repeats of every phase; medians are reported")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--device", choices=["auto", "cpu"], default="auto", help="auto: ComfyUI's device (CUDA if present)")
    if allocator:
        p.add_argument("--allocator", choices=["fixed-mmap", "default"], default="fixed-mmap",
                       help="glibc's mmap threshold on CPU: fixed (RSS follows the live tensors) or glibc's default")
    if progress:
        p.add_argument("--progress", action="store_true", help="show ComfyUI's progress bars")
    p.add_argument("--out", help=f"JSON path (default bench/results/{out_prefix}<timestamp>.json)")


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def note_busy(advice: str = "") -> None:
    """Log when the machine's 1-minute load average is above half its cores."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > 0.5 * (os.cpu_count() or 1):
        log(f"note: the machine is busy (load average {load:.1f} on {os.cpu_count()} cores); timings will be noisy"
            + advice)
