#!/usr/bin/env python
"""FateZero in ComfyUI: time and memory of the pack against plain ComfyUI sampling and
against the original FateZero attention store (issue 5), on SD UNets.

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

Run ``python bench/bench_sd.py --help`` (or ``make bench``). Results: a table on
stdout and ``bench/results/<timestamp>.json``. Random weights: the numbers are about
cost, never about edit quality. The harness (harness.py, memory.py, results.py, report.py,
profiling.py) is shared with the other benches; sd_phases.py (model, phases) and sd_store.py
(store formulas) are the SD parts, sd_report.py the targets and the printed report.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict

import harness
import results
from harness import BLEND_WORDS, REWEIGHT, RESULTS_DIR, SOURCE_PROMPT, TARGET_PROMPT, log
from profiling import profile_call
from report import MB, fmt_bytes, linear_fit, phase_medians
from sd_phases import Bench, add_model_options, load_env
from sd_report import check_targets, print_report
from sd_store import (KEY_FRAMES, attention_layout, layout_summary, materialise_original, original_store, pack_store,
                      sd15_reference)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--size", type=int, default=256, help="frame width = height in pixels (multiple of 8)")
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--full", action="store_true",
                   help="the authors' case: 512x512, 8 frames, 50 steps, SD1.5's full UNet layout with random "
                        "weights (--unet sd15); sweeps over 2,4,8,16 frames and 256,384,512 px at 10 steps")
    add_model_options(p)
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
    harness.add_run_options(p)
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


def timed_phases(bench: Bench, args, latent) -> tuple[dict, object, object]:
    """The phases interleaved per repeat: ``(runs, inverted, store)`` (the last recompute inversion's)."""
    runs: dict[str, list[dict]] = {"baseline": [], "inversion": [], "fused": [], "fused_blend": []}
    if not args.no_cache:
        runs.update(inversion_cache=[], fused_cache=[], fused_blend_cache=[])
    if args.breakdown:
        runs["temporal_only"] = []

    def edit(store_mode: str):
        """The inversion in ``store_mode`` and fused sampling without and with the blend mask."""
        key = "" if store_mode == "recompute" else f"_{store_mode}"
        inverted, store, res = bench.inversion(latent, args.steps, store_mode)
        runs["inversion" + key].append(res)
        cache = f" (cache {fmt_bytes(store.cache.nbytes())})" if store_mode == "cache" else ""
        log(f"  {res['seconds']:.1f}s{cache}; fused sampling ...")
        runs["fused" + key].append(bench.fused(inverted, store, store.info.steps, blend=False)[1])
        log(f"  {runs['fused' + key][-1]['seconds']:.1f}s; fused sampling with blend mask ...")
        runs["fused_blend" + key].append(bench.fused(inverted, store, store.info.steps, blend=True)[1])
        log(f"  {runs['fused_blend' + key][-1]['seconds']:.1f}s")
        return inverted, store

    inverted = store = None
    for r in range(args.repeats):
        log(f"repeat {r + 1}/{args.repeats}: plain KSamplerAdvanced ...")
        runs["baseline"].append(bench.baseline(latent, args.steps)[1])
        log(f"  {runs['baseline'][-1]['seconds']:.1f}s; FateZeroDDIMInversion ...")
        inverted, store = edit("recompute")
        if not args.no_cache:
            log("store_mode cache: FateZeroDDIMInversion ...")
            edit("cache")  # its inversion and store are dropped here
        if args.breakdown:
            runs["temporal_only"].append(bench.temporal_only(latent, args.steps)[1])
            log(f"  plain + spatio-temporal patch: {runs['temporal_only'][-1]['seconds']:.1f}s")
    return runs, inverted, store


def sweeps(bench: Bench, args, dm) -> dict:
    """Time and peak memory measured over frame counts (at --sweep-size) and sizes (2 frames)."""
    def point(frames: int, px: int) -> dict:
        lat = bench.video_latent(frames, px)
        b = bench.baseline(lat, args.sweep_steps)[1]
        inv, st, i = bench.inversion(lat, args.sweep_steps)
        fu = bench.fused(inv, st, st.info.steps, blend=False)[1]
        ll = attention_layout(dm, (px // 8,) * 2)
        return {"frames": frames, "size": px, "baseline": b, "inversion": i, "fused": fu, "store_bytes": st.nbytes(),
                "original_bytes": original_store(ll, frames, st.info.steps, args.temporal_mode,
                                                 args.temporal_min_channels)["bytes"]}
    sweep = {"frames": [], "size": []}
    for f in harness.ints(args.sweep_frames):
        log(f"frames sweep: {f} frames at {args.sweep_size}px, {args.sweep_steps} steps ...")
        sweep["frames"].append(point(f, args.sweep_size))
    for px in harness.ints(args.sweep_sizes):
        log(f"size sweep: {px}px, 2 frames, {args.sweep_steps} steps ...")
        sweep["size"].append(point(2, px))
    if len(sweep["frames"]) >= 2:
        xs = [s["frames"] for s in sweep["frames"]]
        sweep["frames_fit"] = {ph: linear_fit(xs, [s[ph]["peak_rss_delta"] / MB for s in sweep["frames"]])
                               for ph in ("baseline", "inversion", "fused")}
        if bench.env.device.type == "cuda":
            for ph in ("baseline", "inversion", "fused"):
                sweep["frames_fit"][ph + "_gpu"] = linear_fit(xs, [s[ph]["gpu_peak_delta"] / MB for s in sweep["frames"]])
    return sweep


def main(argv=None) -> int:
    args = parse_args(argv)
    harness.start_comfy(args.device, args.threads)
    log("loading ComfyUI, the pack and the model ...")
    env = load_env(args)
    bench = Bench(env, args)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out_path = results.result_path(args.out, stamp)
    dm = env.model.model.diffusion_model
    latent_hw = (args.size // 8, args.size // 8)
    layers = attention_layout(dm, latent_hw)
    report: dict = {"args": vars(args), "environment": results.environment(env),
                    "case": {"size": args.size, "frames": args.frames, "steps": args.steps,
                             "source_prompt": SOURCE_PROMPT, "target_prompt": TARGET_PROMPT, "reweight": REWEIGHT,
                             "blend_words": BLEND_WORDS, "layout": [asdict(l) for l in layers]}}
    if env.device.type == "cpu":
        harness.note_busy(": use --repeats 3 (medians) and consider --threads 1")
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
    runs, inverted, store = timed_phases(bench, args, latent)
    steps = store.info.steps
    phases, report["phases"] = phase_medians(runs)

    # -- 3b. the original store for this case, and the SD1.5 reference case ---------------------
    orig = original_store(layers, args.frames, steps, args.temporal_mode, args.temporal_min_channels)
    packf = pack_store(layers, args.frames, latent_hw, steps)
    report["store_bench_case"] = {"original": orig, "pack_formula": packf, "pack_measured": store.nbytes(),
                                  "pack_formula_matches": packf["bytes"] == store.nbytes()}
    ref = sd15_reference(env.pack, max(args.cross_replace, args.self_replace), args.temporal_mode)
    report["store_sd15_512_8f_50s"] = ref

    # -- growth, measured at small sizes --------------------------------------------------------
    report["sweeps"] = sweep = sweeps(bench, args, dm)

    if args.profile:
        log("profiling one fused sampling without and with blend mask (cProfile) ...")
        report["profile"] = {
            key: profile_call(lambda: bench.fused(inverted, store, steps, blend=blend, measure=False),
                              RESULTS_DIR / f"{stamp}-fused{'-blend' if blend else ''}.prof")
            for key, blend in (("fused", False), ("fused_blend", True))}

    report["targets"], report["fusion"] = check_targets(args, env.device, phases, runs, store, orig, ref, sweep)
    results.write_results(out_path, report)
    print_report(report, args, out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
