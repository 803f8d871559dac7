"""Wan's GPU estimate, computed from the shapes (not measured): each published model's latent
(its VAE) and tokens, parameters, the pack's store, one self-attention map if it were
materialised, the source q and k a fused step holds, and the matmul compute of the source pass,
the blend mask and the inversion against plain CFG sampling. Needs no ComfyUI (the pack's
block ranges and replace counts come from its own modules: ``harness.PackModules``).
bench_wan.py prints it (``--estimate-only``: alone) and uses ``compute_model`` for the measured case."""
from __future__ import annotations

import math
from dataclasses import dataclass

from harness import PackModules

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
    blend blocks of the recorded call. Memory: what a fused step holds for the source row
    (``run/source_blocks.py``: it walks the blocks beside the edit call), one block's
    self-attention q and k and cross-attention q ``[1, n, dim]`` and k ``[1, 512, dim]``, plus the
    source row's hidden state ``[1, n, dim]``, context ``[1, 512, dim]`` (model dtype) and RoPE
    frequencies (fp32, ``head_dim * 2`` floats a token); ``whole_pass_qk_bytes``: what a whole
    source pass held before (every fused block's q, k)."""
    fz = PackModules()
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
        "source_qk_bytes": (3 * n + TEXT_LEN) * dim * dtype_bytes if fused else 0,
        "source_held_bytes": ((3 * n + TEXT_LEN) * dim * dtype_bytes + (n + TEXT_LEN) * dim * dtype_bytes
                              + n * HEAD_DIM * 2 * 4) if fused else 0,
        "whole_pass_qk_bytes": len(fused) * (3 * n + TEXT_LEN) * dim * dtype_bytes,
    }


def store_bytes(grid: tuple[int, int, int], steps: int, columns: int, channels: int = 16) -> dict:
    """The pack's Wan store (``nodes/inversion_flow.py``): sigmas fp32 [steps+1], the latent
    trajectory fp32 [steps, 1, channels, T, H, W], the source context fp32 [1, 512, 4096], the
    inversion call's conditioning (c_crossattn, one row, as the CLIP gave it: fp32 here), the
    blend maps fp32 [steps, T, h, w, columns] on the token grid (the prompt's columns only), the
    inverted latent and noise fp32 [1, channels, T, H, W] each (Load Attention Store's outputs), and
    the clean latent fp32 [1, channels, T, H, W] (the fusion node's noised-source mode)."""
    t, h, w = grid
    tt, th, tw = token_count(grid)
    parts = {
        "sigmas": (steps + 1) * 4,
        "trajectory": steps * channels * t * h * w * 4,
        "source_context": TEXT_LEN * TEXT_DIM * 4,
        "source_conds": TEXT_LEN * TEXT_DIM * 4,
        "blend_maps": steps * tt * th * tw * columns * 4,
        "inverted_latent_and_noise": 2 * channels * t * h * w * 4,
        "clean_latent": channels * t * h * w * 4,
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
    fz = PackModules()
    out = {"frames": frames, "width": width, "height": height, "steps": steps, "prompt_tokens": prompt_tokens,
           "replace_steps": replace, "dtype_bytes": dtype_bytes, "models": {}}
    for name, s in WAN_SHAPES.items():
        d, layers = s.dim, s.layers
        grid = latent_grid(frames, width, height, s.vae_space)
        tokens = token_count(grid)
        n = math.prod(tokens)
        heads = d // HEAD_DIM
        params = wan_parameters(d, s.ffn, layers, s.channels)
        blend = fz.dit.parse_blocks("auto", layers, fz.defaults.WAN_BLEND_BLOCKS)
        m = {"dim": d, "ffn": s.ffn, "layers": layers, "heads": heads, "channels": s.channels, "vae_space": s.vae_space,
             "latent": list(grid), "token_grid": list(tokens), "tokens": n,
             "store": store_bytes(grid, steps, prompt_tokens, s.channels), "parameters": params,
             "weights_bytes": params * dtype_bytes, "blend_blocks": list(blend),
             "self_map_fp32": heads * n * n * 4, "self_map_low": heads * n * n * dtype_bytes, "fused": {}}
        m["self_maps_all_blocks_step_low"] = m["self_map_low"] * layers
        for choice in ("auto", "all"):
            fused = fz.dit.parse_blocks(choice, layers, fz.defaults.WAN_FUSED_BLOCKS)
            m["fused"][choice] = compute_model(d, s.ffn, layers, n, steps, replace, fused, blend,
                                               dtype_bytes=dtype_bytes, channels=s.channels)
        out["models"][name] = m
    return out


def resolution_estimates(steps: int = 50, prompt_tokens: int = 15, replace: float = 0.8,
                         resolutions=ESTIMATE_RESOLUTIONS) -> list[dict]:
    """``gpu_estimate`` at each of ``resolutions`` (width, height, frames)."""
    return [gpu_estimate(f, w, h, steps, prompt_tokens, replace) for w, h, f in resolutions]
