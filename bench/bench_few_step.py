"""Few-step Wan inversion (issue 34): reconstruction error against fixed-point iterations.

A random-weight WanModel (default: the tests' tiny shape) with ModelSamplingSD3 shift 5, as
ComfyUI's Wan 2.2 templates run their 4-step LoRAs: the pack's inversion (Euler, then
fixed-point with 1 to 8 iterations) at 4, 8 and 30 steps, each sampled back with Euler at CFG 1
through SamplerCustomAdvanced; the error is ``|x_back - x| / |x|`` on the latent. The model's
calls per inversion are ``steps`` for Euler and ``steps * iterations + 1`` for fixed-point.

    .host/venv/bin/python bench/bench_few_step.py            # about 2 min on 2 CPU cores
"""
from __future__ import annotations

import argparse
import sys

import harness
from harness import call_node, log
from report import table
from wan_phases import add_tiny_world_options, smooth_video, tiny_world

SOURCE = "a silver jeep driving down a curvy road in the countryside"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_tiny_world_options(p)
    p.add_argument("--iterations", default="1,2,3,4,6,8")
    p.add_argument("--out", help="JSON path (default bench/results/few-step-<timestamp>.json)")
    args = p.parse_args(argv)
    pack, core, model, clip = tiny_world(args)
    import results
    source = core["CLIPTextEncode"]().encode(clip, SOURCE)[0]
    empty = core["CLIPTextEncode"]().encode(clip, "")[0]
    latent = smooth_video(3, 8, 8)
    inversion = core["FateZeroDDIMInversion"]()
    guider = core["CFGGuider"]().get_guider(model, source, empty, 1.0)[0]
    euler = core["KSamplerSelect"]().get_sampler("euler")[0]

    def error(steps: int, method: str, iterations: int) -> float:
        out = call_node(inversion, model=model, source_conditioning=source, latent=latent, steps=steps,
                        flow_inversion=method, fixed_point_iterations=iterations)
        named = dict(zip(type(inversion).RETURN_NAMES, out))
        back = core["SamplerCustomAdvanced"]().sample(named["inverted_noise"], guider, euler, named["edit_sigmas"],
                                                      named["inverted_latent"])[0]["samples"]
        return float((back - latent["samples"]).norm() / latent["samples"].norm())

    steps_list, iters = harness.ints(args.steps), harness.ints(args.iterations)
    rows, data = [], {}
    for steps in steps_list:
        log(f"{steps} steps ...")
        data[steps] = {"euler": error(steps, "euler", 1)}
        data[steps].update({f"fixed-point x{i}": error(steps, "fixed-point", i) for i in iters})
        rows.append([str(steps), *(f"{v:.2e}" for v in data[steps].values())])
    head = ["steps", "euler", *(f"fixed-point x{i}" for i in iters)]
    results.report_table(
        f"reconstruction error |x_back - x| / |x|, WanModel dim {args.dim}, {args.layers} blocks (random weights, "
        f"seed {args.seed}), shift {args.shift:g}, CFG 1, euler back; calls per inversion: euler = steps, "
        f"fixed-point xI = steps * I + 1; commit {results.commit()}", table(rows, head), args.out, "few-step-",
        {"args": vars(args), "errors": data})
    return 0


if __name__ == "__main__":
    sys.exit(main())
