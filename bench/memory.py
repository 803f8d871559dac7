"""Measuring a phase: wall and CPU time, peak RSS (a psutil sampling thread plus the kernel's
high-water mark, reset per phase), GPU peak, the load average; rows through the model; and
glibc's mmap threshold fixed so that RSS follows the live tensors."""
from __future__ import annotations

import ctypes
import gc
import os
import re
import sys
import threading
import time
from pathlib import Path

MMAP_THRESHOLD = "131072"  # bytes: blocks from 128 KB up are mapped and unmapped on their own


def fix_mmap_threshold(allocator: str, script: str, argv=None) -> None:
    """With ``--allocator fixed-mmap``, run ``script`` again with ``MALLOC_MMAP_THRESHOLD_`` set
    (glibc reads it at start-up): freed activation blocks go back to the system, so RSS follows the
    tensors alive; with glibc's default (a threshold that rises after the first large free) freed
    blocks stay in the heap, and RSS would grow with what ran before, not with what is held."""
    if allocator == "fixed-mmap" and os.environ.get("MALLOC_MMAP_THRESHOLD_") != MMAP_THRESHOLD:
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD}
        os.execve(sys.executable, [sys.executable, script, *(sys.argv[1:] if argv is None else argv)], env)


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


def _load_average() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


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
        self._load0 = _load_average()
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
        self.result = {"seconds": seconds, "cpu_seconds": cpu_seconds, "load_average": [self._load0, _load_average()],
                       "start_rss": self._start_rss, "peak_rss_sampled": self._peak,
                       "peak_rss_kernel": hwm, "peak_rss": peak, "peak_rss_delta": peak - self._start_rss}
        if self._cuda:
            self.result.update(gpu_peak=torch.cuda.max_memory_allocated(self.device),
                               gpu_peak_delta=torch.cuda.max_memory_allocated(self.device) - self._gpu_start)
        return False


class UNetCounter:
    """A transparent model wrapper (set under the pack's own) counting calls, rows and model time."""

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
