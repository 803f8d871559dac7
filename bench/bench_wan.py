#!/usr/bin/env python
"""FateZero on Wan (issues 23, 24): time and memory of the pack against plain Wan sampling, on a
random-weight model of Wan 2.1 1.3B's shape (``--model wan22-5b``: Wan 2.2 TI2V 5B's, 48 channels,
16x VAE, built in bfloat16), and a GPU estimate per model and resolution computed from the shapes.

Measured (one process, the same model, video, sigmas and CFG):

1. plain Wan sampling: core ``SamplerCustomAdvanced`` (``CFGGuider`` on the un-patched MODEL,
   sampler euler) with the inversion's inverted_noise, edit_sigmas and inverted_latent;
2. the pack's ``FateZeroDDIMInversion`` (fixed-point, one iteration, by default; ``--inversion euler``);
3. the fused edit: ``FateZeroAttentionFusion`` (fused_blocks auto, replace steps 0.8) + 1.;
4. the blend edit: ``FateZeroBlendMask`` + the fusion + 1.

The model is ComfyUI's ``WanModel`` built by ``tests/models_wan.wan_model`` (seeded random weights)
with the preset's widths and depth (``WAN_SHAPES``; 1.3B: dim 1536, ffn 8960, 12 heads, 30 blocks,
16 channels, text_dim 4096, patch 1x2x2), loaded through ``comfy.sd.load_diffusion_model_state_dict`` (what
``UNETLoader`` calls): ComfyUI detects it as WAN21_T2V and picks its dtype (float32 on a CPU;
``--dtype bf16`` forces bfloat16). The prompts go through core ``CLIPTextEncode`` with the tests'
tiny umT5 (``models_wan.wan_text_encoder``): a real ``[1, 512, 4096]`` Wan context; the fusion
and blend nodes use that CLIP for the word mapping.

Per phase: wall and CPU time (median over ``--repeats``), model rows evaluated, peak RSS and its
growth over the phase (``memory.Meter``: a psutil sampling thread plus the kernel's
high-water mark; on CPU the script runs itself with glibc's mmap threshold fixed, as
bench_windows.py does, so that RSS follows the live tensors), and the ratios to plain sampling
against the issue's targets. ``--estimate-only`` prints only the GPU estimate (no model, no ComfyUI).

Results: a table on stdout and ``bench/results/wan-<timestamp>.json``. Random weights: the
numbers are about cost, never about edit quality. The harness (harness.py, memory.py,
results.py, report.py) is shared with the other benches; estimate.py computes the GPU estimate,
wan_phases.py builds the model and runs the phases, wan_report.py prints.
"""
from __future__ import annotations

import argparse
import math
import shlex
import sys
import time

import harness
import results
from estimate import (HEAD_DIM, PRESETS, VAE_TIME, WAN_SHAPES, compute_model, gpu_estimate, latent_grid,
                      resolution_estimates, store_bytes, token_count, wan_parameters)
from harness import SOURCE_PROMPT, TARGET_PROMPT, REWEIGHT, BLEND_WORDS, log
from memory import Meter, fix_mmap_threshold
from report import paired_ratio, phase_medians
from wan_phases import WanBench, build_model, smooth_video
from wan_report import fmt_bytes, format_estimate, format_resolutions, print_report

# the targets (ratio to plain Wan sampling)
TARGETS = {"fused": 1.35, "inversion": 0.55, "memory": 1.25}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("model (random weights; the preset's widths unless given)")
    g.add_argument("--model", choices=sorted(PRESETS), default="wan21-1.3b",
                   help="published widths, depth, latent channels and VAE scale: " + "; ".join(
                       f"{k}: {PRESETS[k]}" for k in sorted(PRESETS)))
    g.add_argument("--dim", type=int, help="model width (a multiple of 128: heads = dim // 128)")
    g.add_argument("--layers", type=int, help="transformer blocks")
    g.add_argument("--ffn", type=int, help="feed-forward width")
    g.add_argument("--dtype", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto: ComfyUI's choice for the device (float32 on a CPU)")
    g = p.add_argument_group("case")
    g.add_argument("--frames", type=int, default=9, help="video frames (4n+1): (frames-1)/4+1 latent frames")
    g.add_argument("--width", type=int, default=128)
    g.add_argument("--height", type=int, default=128)
    g.add_argument("--steps", type=int, default=10)
    g.add_argument("--cfg", type=float, default=5.0)
    g.add_argument("--inversion", choices=["fixed-point", "euler"], default="fixed-point")
    g.add_argument("--iterations", type=int, default=1, help="fixed-point iterations")
    g.add_argument("--fused-blocks", default="auto", help="'auto' (the pack's default: first half), 'all', or '0-14'")
    g.add_argument("--blend-blocks", default="auto")
    g.add_argument("--replace", type=float, default=0.8, help="cross and self replace steps")
    g.add_argument("--tau", type=float, default=0.3)
    g.add_argument("--source", default=SOURCE_PROMPT)
    g.add_argument("--target", default=TARGET_PROMPT)
    g.add_argument("--reweight", default=REWEIGHT)
    g.add_argument("--blend-words", default=BLEND_WORDS)
    harness.add_run_options(p.add_argument_group("run"), "wan-", allocator=True)
    g = p.add_argument_group("GPU estimate (computed, not measured)")
    g.add_argument("--estimate-only", action="store_true", help="print the GPU estimate and exit")
    g.add_argument("--estimate-frames", type=int, default=81)
    g.add_argument("--estimate-width", type=int, default=832)
    g.add_argument("--estimate-height", type=int, default=480)
    g.add_argument("--estimate-steps", type=int, default=50)
    g.add_argument("--estimate-prompt-tokens", type=int, default=15)
    args = p.parse_args(argv)
    preset = WAN_SHAPES[PRESETS[args.model]]
    args.dim, args.ffn, args.layers = args.dim or preset.dim, args.ffn or preset.ffn, args.layers or preset.layers
    args.channels, args.vae_space = preset.channels, preset.vae_space
    if args.dim % HEAD_DIM:
        p.error("--dim must be a multiple of 128 (ComfyUI detects num_heads = dim // 128)")
    if (args.frames - 1) % VAE_TIME:
        p.error("--frames must be 4n+1 (the Wan VAE's frame counts)")
    if args.width % (2 * args.vae_space) or args.height % (2 * args.vae_space):
        p.error(f"--width and --height must be multiples of {2 * args.vae_space} "
                f"({args.vae_space}x VAE, 2x2 patches)")
    return args


def estimate_args(args) -> dict:
    return {"frames": args.estimate_frames, "width": args.estimate_width, "height": args.estimate_height,
            "steps": args.estimate_steps, "prompt_tokens": args.estimate_prompt_tokens, "replace": args.replace}


def main(argv=None) -> int:
    args = parse_args(argv)
    est = gpu_estimate(**estimate_args(args))
    per_resolution = resolution_estimates(args.estimate_steps, args.estimate_prompt_tokens, args.replace)
    if args.estimate_only:
        print(format_estimate(est))
        print()
        print(format_resolutions(per_resolution))
        return 0
    fix_mmap_threshold(args.allocator, __file__, argv)
    command = shlex.join([sys.executable, *sys.argv])
    torch = harness.start_comfy(args.device, args.threads)
    import comfy.model_management as mm
    import models_wan
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_path = results.result_path(args.out, stamp, "wan-")
    harness.note_busy()

    pack, nodes = harness.load_pack(args.progress)
    log(f"building the random WanModel (dim {args.dim}, ffn {args.ffn}, {args.layers} blocks, "
        f"{args.dim // HEAD_DIM} heads, {args.channels} channels) and loading it with comfy.sd.load_diffusion_model_state_dict ...")
    with Meter(mm.get_torch_device()) as load_meter:
        model, params = build_model(args)
    config = type(model.model.model_config).__name__
    dtype = model.model.get_dtype()
    log(f"  {params / 1e9:.3f} B parameters, detected as {config}, {dtype}; {load_meter.result['seconds']:.0f}s, "
        f"peak RSS {fmt_bytes(load_meter.result['peak_rss'])}")
    clip = models_wan.wan_text_encoder(models_wan.train_spiece())
    desc = (f"WanModel dim {args.dim}, ffn {args.ffn}, {args.layers} blocks, {args.dim // HEAD_DIM} heads, "
            f"{args.channels} channels "
            f"(random weights, {params / 1e9:.3f} B parameters, {config}), tiny umT5 CLIP")
    env = harness.Env(pack, nodes, model, clip, mm.get_torch_device(), desc)
    bench = WanBench(env, args)

    grid = latent_grid(args.frames, args.width, args.height, args.vae_space)
    latent = smooth_video(*grid, channels=args.channels)
    tokens = token_count(grid)
    fz = harness.PackModules()
    fused = fz.dit.parse_blocks(args.fused_blocks, args.layers, fz.defaults.WAN_FUSED_BLOCKS)
    blend_blocks = fz.dit.parse_blocks(args.blend_blocks, args.layers, fz.defaults.WAN_BLEND_BLOCKS)
    shape = compute_model(args.dim, args.ffn, args.layers, math.prod(tokens), args.steps, args.replace, fused,
                          blend_blocks, args.iterations if args.inversion == "fixed-point" else 0,
                          (model.model.manual_cast_dtype or dtype).itemsize, args.channels)  # activations' dtype

    log(f"warm-up: one plain CFG step at {args.width}x{args.height}, {args.frames} frames "
        f"(latent {list(latent['samples'].shape)}, {math.prod(tokens)} tokens) ...")
    warm = bench.warm_up(latent)
    per_row = warm["seconds"] / max(warm["unet_rows"], 1)
    rows = 2 * args.steps + shape["inversion_calls"] + 2 * (2 * args.steps + shape["fused_steps"] * shape["source_per_fused_step"] * 2)
    log(f"  {warm['seconds']:.1f}s for {warm['unet_rows']} rows: projected {rows * per_row * args.repeats / 60:.1f} min "
        f"for {args.repeats} repeat(s) (~{rows:.0f} rows each)")

    runs: dict[str, list[dict]] = {"plain": [], "inversion": [], "fused": [], "fused_blend": []}
    edits = {}
    for r in range(args.repeats):
        log(f"repeat {r + 1}/{args.repeats}: FateZeroDDIMInversion ({args.inversion}) ...")
        inverted, res = bench.inversion(latent)
        runs["inversion"].append(res)
        log(f"  {res['seconds']:.1f}s; plain SamplerCustomAdvanced ...")
        edits["plain"], res = bench.plain(inverted)
        runs["plain"].append(res)
        log(f"  {res['seconds']:.1f}s; fused edit ...")
        edits["fused"], res = bench.fused(inverted, blend=False)
        runs["fused"].append(res)
        log(f"  {res['seconds']:.1f}s; blend edit (blend mask + fusion) ...")
        edits["fused_blend"], res = bench.fused(inverted, blend=True)
        runs["fused_blend"].append(res)
        log(f"  {res['seconds']:.1f}s")
    store = inverted["attention_store"]
    phases, phase_report = phase_medians(runs)
    base = phases["plain"]

    # the store against the formula of the estimate
    formula = store_bytes(grid, store.info.steps, store.cross_maps.shape[-1], args.channels)
    check = {"formula_bytes": formula["bytes"], "measured_bytes": store.nbytes(),
             "match": formula["bytes"] == store.nbytes(),
             "unet_inputs": list(store.unet_inputs.shape), "cross_maps": list(store.cross_maps.shape),
             "source_conds": {k: [list(v.shape), str(v.dtype)] for k, v in store.source_conds.items()}}
    finite = {k: bool(torch.isfinite(v).all()) for k, v in edits.items()}
    ratios = {
        "fused_time": phases["fused"]["seconds"] / base["seconds"],
        "fused_blend_time": phases["fused_blend"]["seconds"] / base["seconds"],
        "inversion_time": phases["inversion"]["seconds"] / base["seconds"],
        "fused_cpu": phases["fused"]["cpu_seconds"] / base["cpu_seconds"],
        "fused_blend_cpu": phases["fused_blend"]["cpu_seconds"] / base["cpu_seconds"],
        "inversion_cpu": phases["inversion"]["cpu_seconds"] / base["cpu_seconds"],
        "fused_rss_growth": phases["fused"]["peak_rss_delta"] / max(base["peak_rss_delta"], 1),
        "fused_blend_rss_growth": phases["fused_blend"]["peak_rss_delta"] / max(base["peak_rss_delta"], 1),
        "inversion_rss_growth": phases["inversion"]["peak_rss_delta"] / max(base["peak_rss_delta"], 1),
        "fused_rss_peak": phases["fused"]["peak_rss"] / base["peak_rss"],
        "fused_blend_rss_peak": phases["fused_blend"]["peak_rss"] / base["peak_rss"],
    }
    paired = lambda k: paired_ratio(runs, k, "plain")
    targets = [
        {"target": "fused edit time <= 1.35x plain", "value": ratios["fused_time"], "limit": TARGETS["fused"],
         "value_cpu": ratios["fused_cpu"], "value_paired": paired("fused"), "shape_model": shape["expected_fused"]},
        {"target": "blend edit time <= 1.35x plain", "value": ratios["fused_blend_time"], "limit": TARGETS["fused"],
         "value_cpu": ratios["fused_blend_cpu"], "value_paired": paired("fused_blend"),
         "shape_model": shape["expected_fused_blend"]},
        {"target": "inversion time <= 0.55x plain", "value": ratios["inversion_time"], "limit": TARGETS["inversion"],
         "value_cpu": ratios["inversion_cpu"], "value_paired": paired("inversion"),
         "shape_model": shape["expected_inversion"]},
        {"target": "fused edit peak RSS growth <= 1.25x plain's", "value": ratios["fused_rss_growth"],
         "limit": TARGETS["memory"], "value_total": ratios["fused_rss_peak"]},
        {"target": "blend edit peak RSS growth <= 1.25x plain's", "value": ratios["fused_blend_rss_growth"],
         "limit": TARGETS["memory"], "value_total": ratios["fused_blend_rss_peak"]},
    ]
    for t in targets:
        t["met"] = t["value"] <= t["limit"]
    threads = torch.get_num_threads()
    busy = [k for k, v in runs.items() for r in v
            if any(x is not None and x > threads + 1 for x in r["load_average"])]
    report = {
        "command": command, "working_tree": results.working_tree(), "args": vars(args),
        "environment": results.environment(env), "machine": results.machine(),
        "model": {"preset": args.model, "parameters": params, "config": config, "dtype": str(dtype),
                  "compute_dtype": str(model.model.manual_cast_dtype or dtype), "channels": args.channels,
                  "vae_space": args.vae_space, "dim": args.dim, "ffn": args.ffn,
                  "layers": args.layers, "heads": args.dim // HEAD_DIM,
                  "parameters_formula": wan_parameters(args.dim, args.ffn, args.layers, args.channels),
                  "load": load_meter.result},
        "case": {"frames": args.frames, "width": args.width, "height": args.height, "latent": list(latent["samples"].shape),
                 "tokens": math.prod(tokens), "steps": args.steps, "cfg": args.cfg, "source": args.source,
                 "target": args.target, "reweight": args.reweight, "blend_words": args.blend_words,
                 "fused_blocks": list(fused), "blend_blocks": list(blend_blocks), "replace": args.replace},
        "busy": sorted(set(busy)), "warm_up": warm, "phases": phase_report,
        "ratios": ratios, "targets": targets, "shape_model": shape, "store_check": check, "finite": finite,
        "gpu_estimate": est, "gpu_estimate_per_resolution": per_resolution,
    }
    results.write_results(out_path, report)
    print_report(report, args, out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
