"""The source row's two modes on Wan (issue 34): the inverted trajectory against the noised
source (the clean latent noised to each step's sigma with the sampler's noise).

A random-weight WanModel (default: the tests' tiny shape) with ModelSamplingSD3 shift 5, CFG 1,
euler, the fusion node's default fractions (0.8) and fused blocks (the first half). For each step
count the inversion runs with the few-step default of fixed-point iterations (4 up to 8 steps,
else 1), then:
- ``inverted``: the edit from the inversion's noise on its edit_sigmas;
- ``noised source``: the edit from RandomNoise on the source latent, the same step count;
- ``plain from noise``: that noise sampled without fusion (what the model makes alone).
Each with the source prompt as target (how close the edit stays to the clip: the structure a
mode keeps) and with one word swapped; the figure is ``|x_edit - x| / |x|`` on the latent.
Random weights: this compares the modes' hold on the source, not edit quality.

    .host/venv/bin/python bench/bench_source_modes.py            # about 3 min on 2 idle CPU cores
"""
from __future__ import annotations

import argparse
import sys

import harness
from harness import call_node, log
from report import table
from wan_phases import add_tiny_world_options, smooth_video, tiny_world

SOURCE = "a silver jeep driving down a curvy road in the countryside"
SWAP = "a red jeep driving down a curvy road in the countryside"
MODES = ("inverted", "noised source", "plain from noise")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_tiny_world_options(p)
    p.add_argument("--noise-seed", type=int, default=11)
    p.add_argument("--out", help="JSON path (default bench/results/source-modes-<timestamp>.json)")
    args = p.parse_args(argv)
    pack, core, model, clip = tiny_world(args)
    import results
    defaults = pack.fatezero_attn.defaults
    node = lambda name: core[name]()
    encode = lambda text: node("CLIPTextEncode").encode(clip, text)[0]
    prompts = {SOURCE: encode(SOURCE), SWAP: encode(SWAP)}
    latent = smooth_video(3, 8, 8)
    x = latent["samples"]
    euler = node("KSamplerSelect").get_sampler("euler")[0]
    fresh = node("RandomNoise").get_noise(args.noise_seed)[0]

    def edit(mode: str, store, inverted: dict, steps: int, target: str) -> float:
        fused = model
        if mode != "plain from noise":
            fused = call_node(node("FateZeroAttentionFusion"), model=model, attention_store=store, clip=clip,
                              source_prompt=SOURCE, target_prompt=target, source_latents=mode,
                              noise=fresh if mode == "noised source" else None)[0]
        guider = node("CFGGuider").get_guider(fused, prompts[target], prompts[target], 1.0)[0]
        if mode == "inverted":
            noise, sigmas, start = inverted["inverted_noise"], inverted["edit_sigmas"], inverted["inverted_latent"]
        else:
            noise, sigmas, start = fresh, node("BasicScheduler").get_sigmas(model, "simple", steps, 1.0)[0], latent
        out = node("SamplerCustomAdvanced").sample(noise, guider, euler, sigmas, start)[0]["samples"]
        return float((out - x).norm() / x.norm())

    rows, data = [], {}
    for steps in harness.ints(args.steps):
        log(f"{steps} steps ...")
        iterations = defaults.WAN_FEW_STEP_ITERATIONS if steps <= 8 else defaults.WAN_FIXED_POINT_ITERATIONS
        inversion = node("FateZeroDDIMInversion")
        out = call_node(inversion, model=model, source_conditioning=prompts[SOURCE], latent=latent, steps=steps,
                        fixed_point_iterations=iterations)
        inverted = dict(zip(type(inversion).RETURN_NAMES, out))
        store = inverted["attention_store"]
        data[steps] = {f"{mode}, {which}": edit(mode, store, inverted, steps, target)
                       for which, target in (("same prompt", SOURCE), ("word swapped", SWAP)) for mode in MODES}
        rows.append([str(steps), str(iterations), *(f"{v:.3f}" for v in data[steps].values())])
    head = ["steps", "iterations", *data[next(iter(data))]]
    results.report_table(
        f"|x_edit - x| / |x| on the latent, WanModel dim {args.dim}, {args.layers} blocks (random weights, seed "
        f"{args.seed}), shift {args.shift:g}, CFG 1, euler, fractions 0.8, fused blocks auto; commit "
        f"{results.commit()}", table(rows, head), args.out, "source-modes-", {"args": vars(args), "errors": data})
    return 0


if __name__ == "__main__":
    sys.exit(main())
