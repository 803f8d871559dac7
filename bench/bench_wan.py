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

The model is ComfyUI's ``WanModel`` built by ``tests/wan_models.wan_model`` (seeded random weights)
with the preset's widths and depth (``WAN_SHAPES``; 1.3B: dim 1536, ffn 8960, 12 heads, 30 blocks,
16 channels, text_dim 4096, patch 1x2x2), loaded through ``comfy.sd.load_diffusion_model_state_dict`` (what
``UNETLoader`` calls): ComfyUI detects it as WAN21_T2V and picks its dtype (float32 on a CPU;
``--dtype bf16`` forces bfloat16). The prompts go through core ``CLIPTextEncode`` with the tests'
tiny umT5 (``wan_models.wan_text_encoder``): a real ``[1, 512, 4096]`` Wan context; the fusion
and blend nodes use that CLIP for the word mapping.

Per phase: wall and CPU time (median over ``--repeats``), model rows evaluated, peak RSS and its
growth over the phase (``bench_fatezero.Meter``: a psutil sampling thread plus the kernel's
high-water mark; on CPU the script runs itself with glibc's mmap threshold fixed, as
bench_windows.py does, so that RSS follows the live tensors), and the ratios to plain sampling
against the issue's targets. ``--estimate-only`` prints only the GPU estimate (no model, no ComfyUI).

Results: a table on stdout and ``bench/results/wan-<timestamp>.json``. Random weights: the
numbers are about cost, never about edit quality.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
PACK_DIR = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
import bench_fatezero as bf  # noqa: E402  (ComfyUI in-process, call_node, Meter, UNetCounter, table, environment)

SOURCE_PROMPT = "a silver jeep driving down a curvy road in the countryside"
TARGET_PROMPT = "watercolor painting of a silver jeep driving down a curvy road in the countryside"
REWEIGHT = "watercolor:10"
BLEND_WORDS = "silver, jeep"

@dataclass(frozen=True)
class Shape:
    """A Wan model's published widths (num_heads = dim // 128, as ComfyUI detects them) and its
    VAE's spatial compression (both VAEs turn 4n+1 frames into n+1 latent frames)."""
    dim: int
    ffn: int
    layers: int
    channels: int = 16
    vae_space: int = 8


# the published shapes; a Wan 2.2 A14B expert is shaped as Wan 2.1 14B (two of them, one runs per step)
WAN_SHAPES = {
    "Wan 2.1 1.3B": Shape(1536, 8960, 30),
    "Wan 2.1 14B / 2.2 A14B expert": Shape(5120, 13824, 40),
    "Wan 2.2 TI2V 5B": Shape(3072, 14336, 30, channels=48, vae_space=16),
}
PRESETS = {"wan21-1.3b": "Wan 2.1 1.3B", "wan22-5b": "Wan 2.2 TI2V 5B"}  # --model: the measured shapes
TEXT_LEN, TEXT_DIM, PATCH, FREQ_DIM, HEAD_DIM = 512, 4096, (1, 2, 2), 256, 128
VAE_TIME = 4  # 4n+1 frames -> n+1 latent frames
# the GPU estimate's resolutions: Wan 2.1's 480p and 720p (81 frames at 16 fps), the 5B model's 720p (121 at 24 fps)
ESTIMATE_RESOLUTIONS = ((832, 480, 81), (1280, 720, 81), (1280, 704, 121))

# the targets (ratio to plain Wan sampling)
TARGETS = {"fused": 1.35, "inversion": 0.55, "memory": 1.25}

MMAP_THRESHOLD = "131072"  # as bench_windows.py: blocks from 128 KB up are mapped and unmapped on their own
MB, GB = bf.MB, bf.GB


# ======================================================================================
# Shapes -> compute and memory (the GPU estimate, and the model of the measured case)
# ======================================================================================
def fatezero_attn():
    """The pack's pure modules (block ranges, replace counts), importable without ComfyUI."""
    if str(PACK_DIR) not in sys.path:
        sys.path.insert(0, str(PACK_DIR))
    import fatezero_attn.defaults
    import fatezero_attn.schedule
    import fatezero_attn.wan_dit
    return fatezero_attn


def latent_grid(frames: int, width: int, height: int, vae_space: int = 8) -> tuple[int, int, int]:
    """``(T, H, W)`` of the Wan latent of ``frames`` video frames of ``width x height``."""
    return (frames - 1) // VAE_TIME + 1, height // vae_space, width // vae_space


def token_count(grid: tuple[int, int, int]) -> tuple[int, int, int]:
    t, h, w = grid
    return math.ceil(t / PATCH[0]), math.ceil(h / PATCH[1]), math.ceil(w / PATCH[2])


def wan_parameters(dim: int, ffn: int, layers: int, channels: int = 16) -> int:
    """Parameters of ComfyUI's ``WanModel`` (t2v) with these widths."""
    d, p = dim, math.prod(PATCH) * channels
    block = (4 * (d * d + d) + 2 * d          # self-attention q, k, v, o + q/k RMS norms
             + 4 * (d * d + d) + 2 * d        # text cross-attention
             + 2 * d                          # norm3 (cross_attn_norm, affine LayerNorm)
             + (d * ffn + ffn) + (ffn * d + d)  # feed-forward
             + 6 * d)                         # modulation
    outside = (p * d + d                                   # patch embedding
               + (TEXT_DIM * d + d) + (d * d + d)          # text embedding
               + (FREQ_DIM * d + d) + (d * d + d)          # time embedding
               + (d * 6 * d + 6 * d)                       # time projection
               + (d * p + p) + 2 * d)                      # head + its modulation
    return layers * block + outside


def block_macs(dim: int, ffn: int, n: int, part: str = "full") -> int:
    """Multiply-accumulates of one Wan block on one row of ``n`` tokens (the matmuls; norms,
    RoPE and modulation are elementwise and left out). ``part="source"``: what the pack's source
    pass runs of its last fused block (self-attention, then the cross-attention's q, k, v
    projections; it stops when the last fused layer hands over its q and k)."""
    d, L = dim, TEXT_LEN
    self_attn = 4 * n * d * d + 2 * n * n * d        # q, k, v, o projections; q k^T and P v
    cross_proj = n * d * d + 2 * L * d * d            # q of the video, k and v of the 512 text positions
    if part == "source":
        return self_attn + cross_proj
    cross_rest = 2 * n * L * d + n * d * d            # q k^T, P v, o
    return self_attn + cross_proj + cross_rest + 2 * n * d * ffn


def outside_macs(dim: int, n: int, channels: int = 16) -> tuple[int, int]:
    """``(embeddings, head)`` MACs of one row: patch, text and time embeddings; the head."""
    d, p = dim, math.prod(PATCH) * channels
    embed = n * p * d + TEXT_LEN * TEXT_DIM * d + TEXT_LEN * d * d + FREQ_DIM * d + d * d + 6 * d * d
    return embed, n * d * p


def compute_model(dim: int, ffn: int, layers: int, n: int, steps: int, replace: float, fused: tuple[int, ...],
                  blend_blocks: tuple[int, ...], iterations: int = 1, dtype_bytes: int = 2, channels: int = 16) -> dict:
    """The extra compute of the pack against plain CFG sampling, from the shapes.

    plain step: 2 rows (CFG) through every block; source pass per fused step: 1 row up to the
    last fused block (partial there); the blend mask: the edit row's own self-attention beside
    the fused one in every fused block; refine/reweight cross fusion: ``R v`` and a second cross
    attention (an upper bound: a word swap needs neither); inversion: one row per step plus the
    first step's extra call (fixed-point, one iteration) and the head-mean cross maps at the
    blend blocks of the recorded call. Memory: what a fused step holds from the source pass to
    the edit call, per fused block the self-attention's q and k and the cross-attention's q
    ``[1, n, dim]`` and k ``[1, 512, dim]`` in the model's dtype (``source_call.py`` keeps them all)."""
    fz = fatezero_attn()
    embed, head = outside_macs(dim, n, channels)
    full = block_macs(dim, ffn, n)
    row = embed + layers * full + head
    plain_step = 2 * row
    last = max(fused) if fused else -1
    source = embed + last * full + block_macs(dim, ffn, n, "source") if fused else 0
    self_attn_core = 2 * n * n * dim
    blend_extra = len(fused) * self_attn_core
    cross_extra = len(fused) * (TEXT_LEN * TEXT_LEN * dim + 2 * n * TEXT_LEN * dim)
    cross_steps, self_steps = fz.schedule.replace_step_counts(steps, replace, replace)
    fused_steps = max(cross_steps, self_steps)
    share = fused_steps / steps
    calls = steps + (1 if iterations > 0 else 0) + steps * max(iterations - 1, 0)
    capture = len(blend_blocks) * n * TEXT_LEN * dim  # q k^T of the maps kept (once per step)
    inversion = (calls * row + steps * capture) / (steps * plain_step)
    return {
        "tokens": n, "row_macs": row, "plain_step_macs": plain_step, "block_macs": full,
        "attention_share_of_block": (2 * n * n * dim + 2 * n * TEXT_LEN * dim) / full,
        "fused_blocks": list(fused), "fused_steps": fused_steps, "steps": steps,
        "source_pass_macs": source, "source_per_fused_step": source / plain_step,
        "source_whole_sampling": share * source / plain_step,
        "blend_per_fused_step": blend_extra / plain_step, "cross_fusion_per_fused_step": cross_extra / plain_step,
        "expected_fused": 1 + share * (source + cross_extra) / plain_step,
        "expected_fused_blend": 1 + share * (source + cross_extra + blend_extra) / plain_step,
        "inversion_calls": calls, "expected_inversion": inversion,
        "source_qk_bytes": len(fused) * (3 * n + TEXT_LEN) * dim * dtype_bytes,
    }


def store_bytes(grid: tuple[int, int, int], steps: int, columns: int, channels: int = 16) -> dict:
    """The pack's Wan store (``nodes/inversion_flow.py``): sigmas fp32 [steps+1], the latent
    trajectory fp32 [steps, 1, channels, T, H, W], the source context fp32 [1, 512, 4096], the
    inversion call's conditioning (c_crossattn, one row, as the CLIP gave it: fp32 here), the
    blend maps fp32 [steps, T, h, w, columns] on the token grid (the prompt's columns only), and the
    inverted latent and noise fp32 [1, channels, T, H, W] each (Load Attention Store's outputs)."""
    t, h, w = grid
    tt, th, tw = token_count(grid)
    parts = {
        "sigmas": (steps + 1) * 4,
        "trajectory": steps * channels * t * h * w * 4,
        "source_context": TEXT_LEN * TEXT_DIM * 4,
        "source_conds": TEXT_LEN * TEXT_DIM * 4,
        "blend_maps": steps * tt * th * tw * columns * 4,
        "inverted_latent_and_noise": 2 * channels * t * h * w * 4,
    }
    return {"parts": parts, "bytes": sum(parts.values()),
            "trajectory_shape": [steps, 1, channels, t, h, w], "blend_maps_shape": [steps, tt, th, tw, columns]}


def gpu_estimate(frames: int = 81, width: int = 832, height: int = 480, steps: int = 50, prompt_tokens: int = 15,
                 replace: float = 0.8, dtype_bytes: int = 2) -> dict:
    """Every Wan shape at ``width x height``, ``frames`` frames, from the shapes alone (not
    measured): each model's latent (its VAE) and tokens, the pack's store, one self-attention map
    if it were materialised (what the pack never does), the source q and k a fused step holds,
    and the source pass's compute against a plain CFG step for the default fused blocks and for
    all blocks."""
    fz = fatezero_attn()
    out = {"frames": frames, "width": width, "height": height, "steps": steps, "prompt_tokens": prompt_tokens,
           "replace_steps": replace, "dtype_bytes": dtype_bytes, "models": {}}
    for name, s in WAN_SHAPES.items():
        d, layers = s.dim, s.layers
        grid = latent_grid(frames, width, height, s.vae_space)
        tokens = token_count(grid)
        n = math.prod(tokens)
        heads = d // HEAD_DIM
        params = wan_parameters(d, s.ffn, layers, s.channels)
        blend = fz.wan_dit.parse_blocks("auto", layers, fz.defaults.WAN_BLEND_BLOCKS)
        m = {"dim": d, "ffn": s.ffn, "layers": layers, "heads": heads, "channels": s.channels, "vae_space": s.vae_space,
             "latent": list(grid), "token_grid": list(tokens), "tokens": n,
             "store": store_bytes(grid, steps, prompt_tokens, s.channels), "parameters": params,
             "weights_bytes": params * dtype_bytes, "blend_blocks": list(blend),
             "self_map_fp32": heads * n * n * 4, "self_map_low": heads * n * n * dtype_bytes, "fused": {}}
        m["self_maps_all_blocks_step_low"] = m["self_map_low"] * layers
        for choice in ("auto", "all"):
            fused = fz.wan_dit.parse_blocks(choice, layers, fz.defaults.WAN_FUSED_BLOCKS)
            m["fused"][choice] = compute_model(d, s.ffn, layers, n, steps, replace, fused, blend,
                                               dtype_bytes=dtype_bytes, channels=s.channels)
        out["models"][name] = m
    return out


def resolution_estimates(steps: int = 50, prompt_tokens: int = 15, replace: float = 0.8,
                         resolutions=ESTIMATE_RESOLUTIONS) -> list[dict]:
    """``gpu_estimate`` at each of ``resolutions`` (width, height, frames)."""
    return [gpu_estimate(f, w, h, steps, prompt_tokens, replace) for w, h, f in resolutions]


def format_resolutions(ests: list[dict]) -> str:
    """One line per model and resolution: what a user sizing a GPU needs."""
    rows = []
    for est in ests:
        for name, m in est["models"].items():
            auto = m["fused"]["auto"]
            rows.append([name, f"{est['width']}x{est['height']}, {est['frames']} frames", f"{m['tokens']:,}",
                         f"{auto['expected_fused']:.2f}x", f"{auto['expected_fused_blend']:.2f}x",
                         f"{auto['expected_inversion']:.2f}x", fmt_bytes(m["store"]["bytes"]),
                         fmt_bytes(auto["source_qk_bytes"]), fmt_bytes(m["weights_bytes"])])
    head = ["model", "video", "tokens", "fused edit", "blend edit", "inversion", "store",
            "source q, k per fused step", "weights"]
    e = ests[0]
    return (f"GPU estimate per resolution, computed from the shapes (not measured): {e['steps']} steps, replace steps "
            f"{e['replace_steps']}, default fused blocks, {e['prompt_tokens']} prompt tokens, 16-bit weights and "
            f"activations; times against plain CFG sampling of the same model\n" + bf.table(rows, head))


def fmt_bytes(n: float | None) -> str:
    """``bench_fatezero.fmt_bytes`` with terabytes."""
    return f"{n / 1024 ** 4:.3g} TB" if n is not None and abs(n) >= 1024 ** 4 else bf.fmt_bytes(n)


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
            ["  source q, k held per fused step (" + low + ")",
             *[f"{fmt_bytes(m['fused'][choice]['source_qk_bytes'])} ({m['fused'][choice]['source_qk_bytes'] / m['weights_bytes'] * 100:.0f}% of weights)"
               for m in ms]],
        ]
    rows.append(["inversion / plain (fixed-point, 1 iteration)",
                 *[f"{m['fused']['auto']['expected_inversion']:.3f}x ({m['fused']['auto']['inversion_calls']} one-row calls)"
                   for m in ms]])
    lines.append(bf.table(rows, ["", *names]))
    lines.append("Compute: matmul FLOPs (2 x MACs) of ComfyUI's WanModel per row; plain step = 2 rows (CFG) through every "
                 "block; source pass = 1 row through the embeddings and the blocks up to the last fused one (there: "
                 "self-attention and the cross-attention's projections); blend mask = the edit row's own self-attention "
                 "beside the fused one in each fused block. The source q, k are held from the source pass to the edit "
                 "call of the same step, on top of a plain step's activations.")
    return "\n".join(lines)


# ======================================================================================
# The measured bench
# ======================================================================================
def import_comfy(device: str) -> None:
    bf.import_comfy(device)
    sys.path.insert(0, str(PACK_DIR / "tests"))


def build_model(args):
    """A random-weight ``WanModel`` of the requested widths through ComfyUI's diffusion-model
    loader (state dict -> ``load_diffusion_model_state_dict``, as ``UNETLoader`` does after reading
    the file). Peak RAM: the state dict plus the loaded copy, both in ``--dtype`` when it is
    given (bf16: 2 x 10 GB for the 5B shape), else the float32 state dict plus ComfyUI's pick."""
    import torch
    import comfy.sd
    import wan_models
    dtype = {"auto": None, "fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    sd = wan_models.wan_model(seed=0, dim=args.dim, num_layers=args.layers, ffn_dim=args.ffn, channels=args.channels,
                              dtype=dtype or torch.float32).state_dict()
    params = sum(v.numel() for v in sd.values())
    patcher = comfy.sd.load_diffusion_model_state_dict(sd, {} if dtype is None else {"dtype": dtype})
    del sd  # popped by the loader; the source tensors go with the dict
    if patcher is None:
        raise RuntimeError("ComfyUI did not detect the random WanModel")
    return patcher, params


def smooth_video(latent_frames: int, h: int, w: int, channels: int = 16, seed: int = 0):
    """A video-like latent ``[1, channels, T, h, w]``: low-frequency noise drifting over the frames."""
    import torch
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, channels, 1, max(h // 4, 2), max(w // 4, 2) + latent_frames, generator=g)
    base = torch.nn.functional.interpolate(base, size=(1, h, w + 2 * latent_frames), mode="trilinear")
    return {"samples": torch.cat([base[..., 2 * t:2 * t + w] for t in range(latent_frames)], 2).contiguous()}


class WanBench:
    def __init__(self, env: bf.Env, args):
        self.env, self.args = env, args
        nm = env.pack.NODE_CLASS_MAPPINGS
        self.inversion_node = nm["FateZeroDDIMInversion"]()
        self.fusion_node = nm["FateZeroAttentionFusion"]()
        self.blend_node = nm["FateZeroBlendMask"]()
        core = env.nodes.NODE_CLASS_MAPPINGS
        self.guider_node, self.sampler_node = core["CFGGuider"](), core["SamplerCustomAdvanced"]()
        self.euler = core["KSamplerSelect"]().get_sampler("euler")[0]
        enc = env.nodes.CLIPTextEncode()
        self.source_cond = enc.encode(env.clip, args.source)[0]
        self.target_cond = enc.encode(env.clip, args.target)[0]
        self.negative = enc.encode(env.clip, "")[0]
        self.counter = bf.UNetCounter(env.device)
        self.model = env.model.clone()  # every phase starts from this MODEL (+ the counting wrapper)
        self.model.set_model_unet_function_wrapper(self.counter)

    def _measure(self, fn):
        self.counter.reset()
        with bf.Meter(self.env.device) as m:
            out = fn()
        return out, {**m.result, **self.counter.snapshot()}

    def sample(self, model, inverted: dict):
        """SamplerCustomAdvanced as the Wan workflow wires it: the inversion's noise, sigmas and latent, euler."""
        latent, sigmas, noise = inverted["inverted_latent"], inverted["edit_sigmas"], inverted["inverted_noise"]
        guider = self.guider_node.get_guider(model, self.target_cond, self.negative, self.args.cfg)[0]
        return self.sampler_node.sample(noise, guider, self.euler, sigmas, latent)[0]["samples"]

    def warm_up(self, latent):
        """One plain CFG step on ComfyUI's own noise and schedule (model load, first calls)."""
        import comfy.samplers
        core = self.env.nodes.NODE_CLASS_MAPPINGS
        noise = core["RandomNoise"]().get_noise(0)[0]
        sigmas = comfy.samplers.calculate_sigmas(self.model.get_model_object("model_sampling"), "simple", 1).cpu()
        guider = self.guider_node.get_guider(self.model, self.target_cond, self.negative, self.args.cfg)[0]
        return self._measure(lambda: self.sampler_node.sample(noise, guider, self.euler, sigmas, latent))[1]

    def inversion(self, latent):
        a = self.args
        run = lambda: bf.call_node(self.inversion_node, model=self.model, source_conditioning=self.source_cond,
                                   latent=latent, steps=a.steps, temporal_mode="per-frame", temporal_min_channels=0,
                                   video_groupnorm=False, store_mode="auto", window=0, flow_inversion=a.inversion,
                                   fixed_point_iterations=a.iterations, blend_blocks=a.blend_blocks)
        outputs, r = self._measure(run)
        inverted = dict(zip(type(self.inversion_node).RETURN_NAMES, outputs))  # by name: outputs may be added
        r["store_bytes"] = inverted["attention_store"].nbytes()
        return inverted, r

    def plain(self, inverted):
        return self._measure(lambda: self.sample(self.model, inverted))

    def fused(self, inverted, blend: bool):
        a = self.args
        store = inverted["attention_store"]

        def run():
            extra = {}
            if blend:
                extra["blend_mask"] = bf.call_node(self.blend_node, attention_store=store, clip=self.env.clip,
                                                   source_prompt=a.source, blend_words=a.blend_words, tau=a.tau)[0]
            patched = bf.call_node(self.fusion_node, model=self.model, attention_store=store, clip=self.env.clip,
                                   source_prompt=a.source, target_prompt=a.target, cross_replace_steps=a.replace,
                                   self_replace_steps=a.replace, mapping="auto", reweight=a.reweight,
                                   cross_replace_words="", fused_blocks=a.fused_blocks, **extra)[0]
            return self.sample(patched, inverted)
        return self._measure(run)


def machine() -> dict:
    import psutil
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "machine": platform.machine(), "cpu": cpu or platform.processor(),
            "cpu_count": os.cpu_count(), "ram_bytes": psutil.virtual_memory().total, "hostname": platform.node()}


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
    g = p.add_argument_group("run")
    g.add_argument("--repeats", type=int, default=1, help="timed repeats of every phase; medians are reported")
    g.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    g.add_argument("--device", choices=["auto", "cpu"], default="auto")
    g.add_argument("--allocator", choices=["fixed-mmap", "default"], default="fixed-mmap",
                   help="fixed-mmap: glibc's mmap threshold fixed so RSS follows the live tensors (bench_windows.py)")
    g.add_argument("--progress", action="store_true", help="show ComfyUI's progress bars")
    g.add_argument("--out", help="JSON path (default bench/results/wan-<timestamp>.json)")
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
    if args.allocator == "fixed-mmap" and os.environ.get("MALLOC_MMAP_THRESHOLD_") != MMAP_THRESHOLD:
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD}  # glibc reads it at start-up
        os.execve(sys.executable, [sys.executable, __file__, *(sys.argv[1:] if argv is None else argv)], env)
    command = shlex.join([sys.executable, *sys.argv])
    import_comfy(args.device)
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    import comfy.model_management as mm
    import comfy.utils
    import host
    import wan_models
    comfy.utils.PROGRESS_BAR_ENABLED = args.progress
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_path = Path(args.out) if args.out else bf.RESULTS_DIR / f"wan-{stamp}.json"
    load = os.getloadavg()[0]
    if load > 0.5 * (os.cpu_count() or 1):
        bf.log(f"note: the machine is busy (load average {load:.1f} on {os.cpu_count()} cores); timings will be noisy")

    pack, nodes = host.load_pack_in_process()
    bf.log(f"building the random WanModel (dim {args.dim}, ffn {args.ffn}, {args.layers} blocks, "
           f"{args.dim // HEAD_DIM} heads, {args.channels} channels) and loading it with comfy.sd.load_diffusion_model_state_dict ...")
    with bf.Meter(mm.get_torch_device()) as load_meter:
        model, params = build_model(args)
    config = type(model.model.model_config).__name__
    dtype = model.model.get_dtype()
    bf.log(f"  {params / 1e9:.3f} B parameters, detected as {config}, {dtype}; {load_meter.result['seconds']:.0f}s, "
           f"peak RSS {fmt_bytes(load_meter.result['peak_rss'])}")
    clip = wan_models.wan_text_encoder(wan_models.train_spiece())
    desc = (f"WanModel dim {args.dim}, ffn {args.ffn}, {args.layers} blocks, {args.dim // HEAD_DIM} heads, "
            f"{args.channels} channels "
            f"(random weights, {params / 1e9:.3f} B parameters, {config}), tiny umT5 CLIP")
    env = bf.Env(pack, nodes, model, clip, mm.get_torch_device(), desc)
    bench = WanBench(env, args)

    grid = latent_grid(args.frames, args.width, args.height, args.vae_space)
    latent = smooth_video(*grid, channels=args.channels)
    tokens = token_count(grid)
    fz = fatezero_attn()
    fused = fz.wan_dit.parse_blocks(args.fused_blocks, args.layers, fz.defaults.WAN_FUSED_BLOCKS)
    blend_blocks = fz.wan_dit.parse_blocks(args.blend_blocks, args.layers, fz.defaults.WAN_BLEND_BLOCKS)
    shape = compute_model(args.dim, args.ffn, args.layers, math.prod(tokens), args.steps, args.replace, fused,
                          blend_blocks, args.iterations if args.inversion == "fixed-point" else 0,
                          (model.model.manual_cast_dtype or dtype).itemsize, args.channels)  # activations' dtype

    bf.log(f"warm-up: one plain CFG step at {args.width}x{args.height}, {args.frames} frames "
           f"(latent {list(latent['samples'].shape)}, {math.prod(tokens)} tokens) ...")
    warm = bench.warm_up(latent)
    per_row = warm["seconds"] / max(warm["unet_rows"], 1)
    rows = 2 * args.steps + shape["inversion_calls"] + 2 * (2 * args.steps + shape["fused_steps"] * shape["source_per_fused_step"] * 2)
    bf.log(f"  {warm['seconds']:.1f}s for {warm['unet_rows']} rows: projected {rows * per_row * args.repeats / 60:.1f} min "
           f"for {args.repeats} repeat(s) (~{rows:.0f} rows each)")

    runs: dict[str, list[dict]] = {"plain": [], "inversion": [], "fused": [], "fused_blend": []}
    edits = {}
    for r in range(args.repeats):
        bf.log(f"repeat {r + 1}/{args.repeats}: FateZeroDDIMInversion ({args.inversion}) ...")
        inverted, res = bench.inversion(latent)
        runs["inversion"].append(res)
        bf.log(f"  {res['seconds']:.1f}s; plain SamplerCustomAdvanced ...")
        edits["plain"], res = bench.plain(inverted)
        runs["plain"].append(res)
        bf.log(f"  {res['seconds']:.1f}s; fused edit ...")
        edits["fused"], res = bench.fused(inverted, blend=False)
        runs["fused"].append(res)
        bf.log(f"  {res['seconds']:.1f}s; blend edit (blend mask + fusion) ...")
        edits["fused_blend"], res = bench.fused(inverted, blend=True)
        runs["fused_blend"].append(res)
        bf.log(f"  {res['seconds']:.1f}s")
    store = inverted["attention_store"]
    phases = {k: bf.median_phase(v) for k, v in runs.items()}
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
    paired = lambda k: statistics.median(a["seconds"] / b["seconds"] for a, b in zip(runs[k], runs["plain"]))
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
    try:  # the working tree's changes to tracked files, when the commit is "+dirty"
        diff = subprocess.run(["git", "-C", str(PACK_DIR), "diff", "HEAD"], capture_output=True, timeout=30).stdout
        tree = {"diff_sha1": hashlib.sha1(diff).hexdigest(), "diff_bytes": len(diff)}
    except (OSError, subprocess.SubprocessError):
        tree = {}
    report = {
        "command": command, "working_tree": tree, "args": vars(args), "environment": bf.environment(env), "machine": machine(),
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
        "busy": sorted(set(busy)), "warm_up": warm, "phases": {k: {"median": phases[k], "runs": v} for k, v in runs.items()},
        "ratios": ratios, "targets": targets, "shape_model": shape, "store_check": check, "finite": finite,
        "gpu_estimate": est, "gpu_estimate_per_resolution": per_resolution,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=1, default=str))
    print_report(report, args, out_path)
    return 0


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
    print(bf.table(rows, header))
    if rep["busy"]:
        print(f"WARNING: the machine was busy (1-min load average above {env['torch_threads']} threads + 1 at the start "
              f"or end of {', '.join(rep['busy'])}): other processes shared the CPU, so the times are not reliable")
    print("model rows: rows through the model (CFG calls are 2 rows; the source pass is 1 row that stops after the "
          "last fused block); dRSS: peak RSS growth over the phase (the model's weights are in every phase's start)")
    c = rep["store_check"]
    sh = rep["shape_model"]
    print(f"source q, k held per fused step ({len(case['fused_blocks'])} blocks, {m['compute_dtype']}), from the shapes: "
          f"{fmt_bytes(sh['source_qk_bytes'])}; measured peak RSS growth, fused edit minus plain: "
          f"{fmt_bytes(ph['fused']['peak_rss_delta'] - base['peak_rss_delta'])}")
    print(f"store: {fmt_bytes(c['measured_bytes'])} (trajectory {c['unet_inputs']}, blend maps {c['cross_maps']}); "
          f"formula of the estimate {c['formula_bytes']} B vs store.nbytes() {c['measured_bytes']} B -> "
          f"{'EQUAL' if c['match'] else 'MISMATCH'}")
    if not all(rep["finite"].values()):
        print(f"WARNING: non-finite values in the edited latents: {rep['finite']}")
    print()
    print(bf.table([[t["target"], f"{t['value']:.3f}", f"{t['value_cpu']:.3f}" if "value_cpu" in t else "",
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


if __name__ == "__main__":
    sys.exit(main())
