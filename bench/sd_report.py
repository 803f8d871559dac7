"""The SD bench's targets (issues 5, 12, 15) and its printed report: the phases against plain
sampling, the stores (this case, SD1.5 at 512x512, growth), the sweeps, the profile, the targets."""
from __future__ import annotations

from pathlib import Path

from report import MB, fmt_bytes, paired_ratio, table


def check_targets(args, device, phases: dict, runs: dict, store, orig: dict, ref: dict, sweep: dict) -> tuple[list, dict]:
    """``(targets, fusion)``: every target with its value, met or missed (``noisy`` where wall and
    CPU time disagree), and the fusion window's rows and seconds per row."""
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
        targets.append({"target": text, "value": phases[key]["seconds"] / base_s, "limit": limit,
                        "value_cpu": phases[key]["cpu_seconds"] / base_cpu,
                        "value_paired": paired_ratio(runs, key, "baseline")})
    mem = "gpu_peak_delta" if device.type == "cuda" else "peak_rss_delta"
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
    fusion = {"steps_with_source_row": window, "steps": store.info.steps, "rows_ratio_fused_to_plain": rows_ratio,
              "per_row_seconds": {k: phases[k]["unet_seconds"] / max(phases[k]["unet_rows"], 1) for k in phases}}
    return targets, fusion


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
