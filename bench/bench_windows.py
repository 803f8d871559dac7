#!/usr/bin/env python
"""Long clips in windows (issue 11): peak memory and time of the inversion and of fused
sampling as the clip grows, at a fixed window and without windows, and how far a windowed
edit is from the all-frames edit.

    python bench/bench_windows.py                     (make bench-windows)
    python bench/bench_windows.py --frames 8,16,32,64 --window 8 --size 128 --steps 4

Memory is the process's peak RSS growth over each phase on CPU (psutil sampling plus the
kernel's high-water mark: ``memory.Meter``) and ``max_memory_allocated`` on CUDA, as in bench_sd.py.
On CPU the script runs itself with glibc's mmap threshold fixed (``MALLOC_MMAP_THRESHOLD_``),
so that freed activation blocks go back to the system and RSS follows the tensors alive:
with glibc's default (a threshold that rises after the first large free) freed blocks stay
in the heap, and RSS would grow with the number of windows run, not with what they hold
(``--allocator default`` measures that; the pack trims the heap between windows).
The store is in ``recompute`` mode (its trajectory grows with the clip, by kilobytes per
frame here). The distance figures are the relative L2 difference of the edited latent from
the all-frames run, on the bench's video-like latent. Random weights: cost, not quality.
"""
from __future__ import annotations

import argparse
import sys
import time

import harness
import results
from harness import call_node, ints, log
from memory import fix_mmap_threshold
from report import fmt_bytes, linear_fit, table
from sd_phases import Bench, add_model_options, load_env


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--frames", default="8,16,32,64", help="clip lengths of the memory sweep")
    p.add_argument("--window", type=int, default=4, help="frames per window in the sweep")
    p.add_argument("--size", type=int, default=128, help="frame width = height in pixels")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--no-unwindowed", action="store_true", help="skip the all-frames rows of the sweep")
    p.add_argument("--no-distance", action="store_true", help="skip the distance from the all-frames edit")
    p.add_argument("--distance-frames", type=int, default=16)
    p.add_argument("--distance-windows", default="8,4")
    p.add_argument("--distance-size", type=int, default=64)
    p.add_argument("--distance-steps", type=int, default=3)
    add_model_options(p)
    harness.add_run_options(p, "windows-", repeats=False, allocator=True, progress=False)
    args = p.parse_args(argv)
    # what sd_phases' load_env and Bench read
    args.progress, args.temporal_mode, args.temporal_min_channels = False, "middle", 640
    args.no_video_groupnorm, args.cross_replace, args.self_replace, args.tau = False, 0.8, 0.8, 0.3
    return args


class WindowBench(Bench):
    def invert(self, latent, steps: int, window: int, groupnorm: bool = True):
        a = self.args
        run = lambda: call_node(self.inversion_node, model=self.model, source_conditioning=self.source_cond,
                                latent=latent, steps=steps, temporal_mode=a.temporal_mode,
                                temporal_min_channels=a.temporal_min_channels, video_groupnorm=groupnorm,
                                store_mode="recompute", window=window)
        (inverted, store, *_), r = self._measure(run)
        return inverted, store, r


def sweep(bench: WindowBench, args) -> list[dict]:
    rows = []
    for frames in ints(args.frames):
        latent = bench.video_latent(frames, args.size)
        for window in ([0] if not args.no_unwindowed else []) + [args.window]:
            log(f"{frames} frames, window {window or 'all'}: inversion ...")
            inverted, store, inv = bench.invert(latent, args.steps, window)
            log(f"  {inv['seconds']:.1f}s; fused sampling ...")
            fused = bench.fused(inverted, store, store.info.steps, blend=False)[1]
            log(f"  {fused['seconds']:.1f}s")
            rows.append({"frames": frames, "window": window, "inversion": inv, "fused": fused,
                         "store_bytes": store.nbytes()})
            del inverted, store
    return rows


def distances(bench: WindowBench, args) -> list[dict]:
    out = []
    latent = bench.video_latent(args.distance_frames, args.distance_size, seed=1)
    for groupnorm in (True, False):
        edits = {}
        for window in [0] + ints(args.distance_windows):
            log(f"distance: {args.distance_frames} frames, window {window or 'all'}, video GroupNorm {groupnorm} ...")
            inverted, store, _ = bench.invert(latent, args.distance_steps, window, groupnorm)
            edits[window] = bench.fused(inverted, store, store.info.steps, blend=False, measure=False)[0]["samples"]
        for window, edit in edits.items():
            if window:
                d = float((edit - edits[0]).norm() / edits[0].norm())
                out.append({"video_groupnorm": groupnorm, "window": window, "relative_l2": d,
                            "max_abs": float((edit - edits[0]).abs().max()), "frames": args.distance_frames})
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    fix_mmap_threshold(args.allocator, __file__, argv)
    harness.start_comfy(args.device, args.threads)
    env = load_env(args)
    bench = WindowBench(env, args)
    log(f"{env.model_desc} on {env.device}; warm-up ...")
    bench.baseline(bench.video_latent(2, args.size), 1)
    report = {"args": vars(args), "environment": results.environment(env), "sweep": sweep(bench, args),
              "distance": [] if args.no_distance else distances(bench, args)}
    mem = "gpu_peak_delta" if env.device.type == "cuda" else "peak_rss_delta"
    windowed = [r for r in report["sweep"] if r["window"]]
    checks = {}
    for phase in ("inversion", "fused"):
        peaks = [r[phase][mem] for r in windowed]
        checks[f"{phase}_peak_spread"] = max(peaks) / min(peaks) - 1  # flat: within 15%
        xs, ys = [r["frames"] for r in windowed], [r[phase]["seconds"] for r in windowed]
        checks[f"{phase}_time_linear_r2"] = linear_fit(xs, ys)["r2"]
    report["checks"] = checks
    out = results.result_path(args.out, time.strftime("%Y%m%d-%H%M%S"), "windows-")
    results.write_results(out, report)

    label = "GPU peak growth" if mem.startswith("gpu") else "peak RSS growth"
    print(f"\n{env.model_desc}, {args.size}x{args.size}, {args.steps} steps, mode middle, video GroupNorm, "
          f"recompute store, allocator {args.allocator}; {label} per phase:")
    rows = [[r["frames"], r["window"] or "all", f"{r['inversion']['seconds']:.1f}s", fmt_bytes(r["inversion"][mem]),
             f"{r['fused']['seconds']:.1f}s", fmt_bytes(r["fused"][mem]), fmt_bytes(r["store_bytes"])]
            for r in report["sweep"]]
    print(table(rows, ["frames", "window", "inversion", "inv. memory", "fused", "fused memory", "store"]))
    print(f"\nwindow {args.window}: peak memory spread over the sweep: inversion {checks['inversion_peak_spread']:.1%}, "
          f"fused {checks['fused_peak_spread']:.1%} (flat: <= 15%); time linear in frames: R^2 "
          f"{checks['inversion_time_linear_r2']:.3f} / {checks['fused_time_linear_r2']:.3f}")
    print(f"\nedit vs the all-frames edit ({args.distance_frames} frames, {args.distance_size}px, "
          f"{args.distance_steps} steps, mode middle):")
    print(table([["on" if d["video_groupnorm"] else "off", d["window"], f"{d['relative_l2']:.2%}",
                  f"{d['max_abs']:.2g}"] for d in report["distance"]],
                ["video GroupNorm", "window", "relative L2", "max abs"]))
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
