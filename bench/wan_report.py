"""The Wan bench's printed report: the GPU estimate (one table per resolution's models, one line
per model and resolution) and the measured run (the phases against plain sampling, the store
against the estimate's formula, the targets of issue 23)."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import report
from report import table

fmt_bytes = partial(report.fmt_bytes, tb=True)


def fmt_flop(macs: float) -> str:
    return f"{2 * macs / 1e12:.1f} TFLOP" if 2 * macs >= 1e11 else f"{2 * macs / 1e9:.2f} GFLOP"


def format_estimate(est: dict) -> str:
    """The estimate as the README quotes it."""
    lines = [
        f"GPU estimate, computed from the shapes (not measured): {est['width']}x{est['height']}, {est['frames']} frames; "
        f"{est['steps']} steps, replace steps {est['replace_steps']}, {est['prompt_tokens']} prompt tokens; model dtype "
        f"{8 * est['dtype_bytes']}-bit. The store: latent trajectory [steps, 1, C, T, H, W] fp32 + blend maps "
        f"[steps, T, h, w, prompt tokens] fp32 + source context and conditioning 2 x [1, 512, 4096] fp32 + sigmas",
    ]
    names = list(est["models"])
    ms = [est["models"][k] for k in names]
    low = f"{8 * est['dtype_bytes']}-bit"
    rows = [
        ["VAE scale, latent T x H x W -> tokens",
         *[f"{m['vae_space']}x, {' x '.join(map(str, m['latent']))} -> {m['tokens']:,}" for m in ms]],
        ["pack store (per step)",
         *[f"{fmt_bytes(m['store']['bytes'])} ({fmt_bytes(m['store']['bytes'] / est['steps'])})" for m in ms]],
        ["blocks / heads / dim", *[f"{m['layers']} / {m['heads']} / {m['dim']}" for m in ms]],
        ["parameters, weights " + low, *[f"{m['parameters'] / 1e9:.2f} B, {fmt_bytes(m['weights_bytes'])}" for m in ms]],
        ["one self-attention map [heads, N, N] fp32 / " + low,
         *[f"{fmt_bytes(m['self_map_fp32'])} / {fmt_bytes(m['self_map_low'])}" for m in ms]],
        ["  every block's, one step (" + low + "); x steps",
         *[f"{fmt_bytes(m['self_maps_all_blocks_step_low'])}; {fmt_bytes(m['self_maps_all_blocks_step_low'] * est['steps'])}"
           for m in ms]],
        ["plain CFG step (2 rows), attention share of a block",
         *[f"{fmt_flop(m['fused']['auto']['plain_step_macs'])}, {m['fused']['auto']['attention_share_of_block'] * 100:.0f}%"
           for m in ms]],
    ]
    for choice, label in (("auto", "default fused blocks"), ("all", "all blocks")):
        fb = lambda m: m["fused"][choice]["fused_blocks"]
        rows += [
            [f"{label}", *[f"{fb(m)[0]}-{fb(m)[-1]} ({len(fb(m))})" for m in ms]],
            ["  source pass per fused step / plain step",
             *[f"{m['fused'][choice]['source_per_fused_step'] * 100:.1f}% ({fmt_flop(m['fused'][choice]['source_pass_macs'])})"
               for m in ms]],
            ["  over the sampling (fused steps {}/{})".format(ms[0]["fused"][choice]["fused_steps"], est["steps"]),
             *[f"+{m['fused'][choice]['source_whole_sampling'] * 100:.1f}%" for m in ms]],
            ["  + fusion kernels (refine/reweight, upper bound)",
             *[f"+{m['fused'][choice]['cross_fusion_per_fused_step'] * m['fused'][choice]['fused_steps'] / est['steps'] * 100:.2f}%"
               for m in ms]],
            ["  -> expected fused / plain; with blend mask",
             *[f"{m['fused'][choice]['expected_fused']:.3f}x; {m['fused'][choice]['expected_fused_blend']:.3f}x" for m in ms]],
            ["  source row held per fused step (" + low + ")",
             *[f"{fmt_bytes(m['fused'][choice]['source_held_bytes'])} ({m['fused'][choice]['source_held_bytes'] / m['weights_bytes'] * 100:.1f}% of weights)"
               for m in ms]],
            ["  (a whole source pass, as before, held)",
             *[fmt_bytes(m['fused'][choice]['whole_pass_qk_bytes']) for m in ms]],
        ]
    rows.append(["inversion / plain (fixed-point, 1 iteration)",
                 *[f"{m['fused']['auto']['expected_inversion']:.3f}x ({m['fused']['auto']['inversion_calls']} one-row calls)"
                   for m in ms]])
    lines.append(table(rows, ["", *names]))
    lines.append("Compute: matmul FLOPs (2 x MACs) of ComfyUI's WanModel per row; plain step = 2 rows (CFG) through every "
                 "block; source pass = 1 row through the embeddings and the blocks up to the last fused one (there: "
                 "self-attention and the cross-attention's projections); blend mask = the edit row's own self-attention "
                 "beside the fused one in each fused block. The source row walks the blocks beside the edit call: "
                 "one block's q, k and the row's hidden state are held on top of a plain step's activations.")
    return "\n".join(lines)


def format_resolutions(ests: list[dict]) -> str:
    """One line per model and resolution: what a user sizing a GPU needs."""
    rows = []
    for est in ests:
        for name, m in est["models"].items():
            auto = m["fused"]["auto"]
            rows.append([name, f"{est['width']}x{est['height']}, {est['frames']} frames", f"{m['tokens']:,}",
                         f"{auto['expected_fused']:.2f}x", f"{auto['expected_fused_blend']:.2f}x",
                         f"{auto['expected_inversion']:.2f}x", fmt_bytes(m["store"]["bytes"]),
                         fmt_bytes(auto["source_held_bytes"]), fmt_bytes(auto["whole_pass_qk_bytes"]),
                         fmt_bytes(m["weights_bytes"])])
    head = ["model", "video", "tokens", "fused edit", "blend edit", "inversion", "store",
            "source row held per fused step", "(whole source pass)", "weights"]
    e = ests[0]
    return (f"GPU estimate per resolution, computed from the shapes (not measured): {e['steps']} steps, replace steps "
            f"{e['replace_steps']}, default fused blocks, {e['prompt_tokens']} prompt tokens, 16-bit weights and "
            f"activations; times against plain CFG sampling of the same model\n" + table(rows, head))


def print_report(rep: dict, args, out_path: Path) -> None:
    env, case, m = rep["environment"], rep["case"], rep["model"]
    ph = {k: v["median"] for k, v in rep["phases"].items()}
    base = ph["plain"]
    print()
    print(f"FateZero on Wan bench: {env['model']}; {m['dtype']} on {env['device']} ({env['torch_threads']} threads, "
          f"attention {env['attention']}), commit {env['pack_git']}")
    print(f"case: {case['width']}x{case['height']}, {case['frames']} frames -> latent {case['latent']} "
          f"({case['tokens']} tokens), {case['steps']} steps, CFG {case['cfg']:g} with an empty negative, euler; "
          f"inversion {args.inversion}"
          + (f" ({args.iterations} iteration(s))" if args.inversion == "fixed-point" else "")
          + f"; fused blocks {args.fused_blocks} = {case['fused_blocks'][0]}-{case['fused_blocks'][-1]} "
          f"({len(case['fused_blocks'])} of {m['layers']}), replace steps {case['replace']}; "
          f"median of {args.repeats} run(s)")
    print(f"model load: {m['load']['seconds']:.0f}s, peak RSS {fmt_bytes(m['load']['peak_rss'])}; parameters "
          f"{m['parameters']:,} (formula {m['parameters_formula']:,})")
    names = {"plain": "plain Wan sampling (SamplerCustomAdvanced)", "inversion": "FateZeroDDIMInversion",
             "fused": "fused edit (Attention Fusion)", "fused_blend": "blend edit (Blend Mask + Fusion)"}
    header = ["phase", "wall s", "x plain", "cpu s", "x plain cpu", "model rows", "s/row", "peak RSS", "x plain",
              "dRSS", "x plain dRSS", "load avg"]
    rows = []
    for k in ("plain", "inversion", "fused", "fused_blend"):
        p = ph[k]
        rows.append([names[k], f"{p['seconds']:.1f}", f"{p['seconds'] / base['seconds']:.3f}", f"{p['cpu_seconds']:.1f}",
                     f"{p['cpu_seconds'] / base['cpu_seconds']:.3f}", f"{p['unet_rows']:g}",
                     f"{p['unet_seconds'] / max(p['unet_rows'], 1):.2f}", fmt_bytes(p["peak_rss"]),
                     f"{p['peak_rss'] / base['peak_rss']:.3f}", fmt_bytes(p["peak_rss_delta"]),
                     f"{p['peak_rss_delta'] / max(base['peak_rss_delta'], 1):.2f}",
                     "-".join(f"{x:.1f}" for x in p["load_average"] if x is not None)])
    print(table(rows, header))
    if rep["busy"]:
        print(f"WARNING: the machine was busy (1-min load average above {env['torch_threads']} threads + 1 at the start "
              f"or end of {', '.join(rep['busy'])}): other processes shared the CPU, so the times are not reliable")
    print("model rows: rows through the model (CFG calls are 2 rows; the source pass is 1 row that stops after the "
          "last fused block); dRSS: peak RSS growth over the phase (the model's weights are in every phase's start; the "
          "edits' over their sampling, after the fusion node)")
    c = rep["store_check"]
    sh = rep["shape_model"]
    print(f"source row held per fused step (one of {len(case['fused_blocks'])} blocks' q, k and its hidden state, "
          f"{m['compute_dtype']}), from the shapes: {fmt_bytes(sh['source_held_bytes'])}; measured peak RSS growth, "
          "fused edit minus plain: "
          f"{fmt_bytes(ph['fused']['peak_rss_delta'] - base['peak_rss_delta'])}")
    print(f"store: {fmt_bytes(c['measured_bytes'])} (trajectory {c['unet_inputs']}, blend maps {c['cross_maps']}); "
          f"formula of the estimate {c['formula_bytes']} B vs store.nbytes() {c['measured_bytes']} B -> "
          f"{'EQUAL' if c['match'] else 'MISMATCH'}")
    if not all(rep["finite"].values()):
        print(f"WARNING: non-finite values in the edited latents: {rep['finite']}")
    print()
    print(table([[t["target"], f"{t['value']:.3f}", f"{t['value_cpu']:.3f}" if "value_cpu" in t else "",
                  f"{t['value_paired']:.3f}" if "value_paired" in t else "",
                  f"{t['value_total']:.3f}" if "value_total" in t else "",
                  f"{t['shape_model']:.3f}" if "shape_model" in t else "",
                  f"<= {t['limit']:g}", "PASS" if t["met"] else "MISS"] for t in rep["targets"]],
                ["target (issue 23)", "measured", "cpu time", "paired", "total RSS", "shape model", "limit", ""]))
    print("measured: ratio of median wall times (memory: of the peak RSS growth over the phase); cpu time: of median "
          "process CPU times; paired: median of per-repeat ratios; total RSS: ratio of the whole process's peak "
          "RSS (weights included); shape model: the estimate's formula at this case's shapes (matmul FLOPs only)")
    print()
    print(format_estimate(rep["gpu_estimate"]))
    print()
    print(format_resolutions(rep["gpu_estimate_per_resolution"]))
    print(f"\nJSON: {out_path}")
