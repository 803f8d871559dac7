"""SD UNets' attention layout and the two stores' sizes, computed exactly from the shapes: the
pack's store and the original FateZero store (every self- and cross-attention map at query
length <= 32x32, every inversion step, fp16), the latter checked by really allocating it."""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict

import harness
from memory import Meter

MAX_QUERY = 32 * 32        # the original stores (and the pack fuses) layers with at most 32x32 queries
CONTEXT_TOKENS = 77        # SD1 CLIP window
LATENT_CHANNELS = 4
# frames of keys each frame's self-attention sees, per spatio-temporal mode (FATEZERO.md section 4)
KEY_FRAMES = {"per-frame": 1, "middle": 1, "current+middle": 2, "first+previous": 2}

# UNets built for the bench (random weights); "checkpoint" is the tests' shallow SD1.5 checkpoint.
SD15_UNET = {  # Stable Diffusion 1.5's real layout: 16 transformer blocks, 860M parameters
    "model_channels": 320, "channel_mult": [1, 2, 4, 4], "num_res_blocks": [2, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "transformer_depth_output": [1] * 9 + [0] * 3,
    "transformer_depth_middle": 1,
}
SD15_LITE_UNET = {  # SD1.5's four levels and widths, one ResNet per level (11 transformer blocks)
    "model_channels": 320, "channel_mult": [1, 2, 4, 4], "num_res_blocks": [1, 1, 1, 1],
    "transformer_depth": [1, 1, 1, 0], "transformer_depth_output": [1] * 6 + [0] * 2,
    "transformer_depth_middle": 1,
}
UNETS = {"checkpoint": None, "sd15-lite": SD15_LITE_UNET, "sd15": SD15_UNET}


def meta_unet(widths: dict):
    """The module tree of a UNet without allocating its weights (for the layout only)."""
    import comfy.ldm.modules.diffusionmodules.openaimodel as openaimodel
    import comfy.ops
    import models_sd1
    return openaimodel.UNetModel(**models_sd1._unet_config(widths), operations=comfy.ops.disable_weight_init,
                                 device="meta")


def attention_layout(dm, latent_hw: tuple[int, int]) -> list:
    """Every transformer block with its query size and channels: the pack's own reader (``AttnLayer``)."""
    return harness.PackModules(harness.load_pack()[0]).layout.attention_layout(dm, latent_hw)


def layout_summary(layers: list) -> str:
    by_res = Counter((l.h, l.w, l.channels) for l in layers)
    return ", ".join(f"{n}x {h}x{w}/{c}ch" for (h, w, c), n in sorted(by_res.items(), reverse=True))


def original_store(layers: list, frames: int, steps: int, mode: str, min_channels: int,
                   context_tokens: int = CONTEXT_TOKENS, max_query: int = MAX_QUERY, bytes_per: int = 2) -> dict:
    """The authors' store: every self/cross map of every layer with q <= max_query, every
    inversion step, fp16. Self maps ``[frames*heads, q, key_frames*q]``, cross ``[frames*heads, q, 77]``."""
    shapes: list[tuple[str, tuple[int, int, int]]] = []
    for l in layers:
        if l.q > max_query:
            continue
        kf = KEY_FRAMES[mode] if (mode != "per-frame" and l.channels >= min_channels) else 1
        shapes.append(("self", (frames * l.heads, l.q, kf * l.q)))
        shapes.append(("cross", (frames * l.heads, l.q, context_tokens)))
    per_step = {"self": 0, "cross": 0}
    for kind, s in shapes:
        per_step[kind] += math.prod(s) * bytes_per
    total = (per_step["self"] + per_step["cross"]) * steps
    return {"mode": mode, "min_channels": min_channels, "frames": frames, "steps": steps,
            "layers_stored": len(shapes) // 2, "layers_total": len(layers),
            "self_bytes": per_step["self"] * steps, "cross_bytes": per_step["cross"] * steps,
            "bytes": total, "bytes_per_frame_step": total / (frames * steps),
            "map_shapes_per_step": shapes}


def blend_level_hw(layers: list, latent_hw: tuple[int, int]) -> tuple[int, int]:
    """The pack captures cross maps where the layer is 1/4 of the latent (sd_unet.SDUNet.is_blend_layer)."""
    for l in layers:
        if round(latent_hw[0] / l.h) == 4:
            return l.h, l.w
    return 0, 0


def pack_store(layers: list, frames: int, latent_hw: tuple[int, int], steps: int,
               context_tokens: int = CONTEXT_TOKENS) -> dict:
    """The pack's store (fatezero_attn/store/attention_store.py): sigmas fp32 [steps+1], trajectory fp32
    [steps, frames, 4, h, w], source context fp32 [1, 77, dim], the inversion call's conditioning
    (a text-only prompt: one row, fp32 [1, 77, dim]), cross maps fp32 [steps, frames, h/4, w/4, 77] and
    the inverted latent fp32 [frames, 4, h, w] (Load Attention Store's latent output)."""
    h, w = latent_hw
    bh, bw = blend_level_hw(layers, latent_hw)
    dim = layers[0].context_dim
    parts = {
        "sigmas": (steps + 1) * 4,
        "trajectory": steps * frames * LATENT_CHANNELS * h * w * 4,
        "source_context": context_tokens * dim * 4,
        "source_conds": context_tokens * dim * 4,
        "cross_maps": steps * frames * bh * bw * context_tokens * 4,
        "inverted_latent": frames * LATENT_CHANNELS * h * w * 4,
    }
    total = sum(parts.values())
    return {"frames": frames, "steps": steps, "latent_hw": [h, w], "parts": parts, "bytes": total,
            "bytes_per_frame_step": total / (frames * steps), "cross_maps_shape": [steps, frames, bh, bw, context_tokens]}


def sd15_reference(pack, replace: float, mode: str) -> dict:
    """SD1.5's real UNet at 512x512, 8 frames, 50 steps: the pack's store, the original's per
    spatio-temporal mode, the cache mode's size (fp16: SD1.5's dtype on a GPU); and both stores'
    growth with frames and with the size (``mode``)."""
    sd15 = meta_unet(SD15_UNET)
    ref_layers = attention_layout(sd15, (64, 64))
    ref = {"layout": [asdict(l) for l in ref_layers], "transformer_blocks": len(ref_layers),
           "pack": pack_store(ref_layers, 8, (64, 64), 50),
           "original": {m: original_store(ref_layers, 8, 50, m, 640) for m in KEY_FRAMES}}
    ref["ratio"] = {m: ref["pack"]["bytes"] / o["bytes"] for m, o in ref["original"].items()}
    sc = harness.PackModules(pack).source_cache
    cached = sc.cached_steps(50, replace)
    ref["cache"] = {m: {"steps_cached": cached, "bytes": sc.estimate_bytes(ref_layers, 8, cached, m, 640, MAX_QUERY, 2)}
                    for m in KEY_FRAMES}
    for m, c in ref["cache"].items():
        c["total"] = c["bytes"] + ref["pack"]["bytes"]
        c["ratio"] = c["total"] / ref["original"][m]["bytes"]
    ref["growth_frames"] = [{"frames": f, "pack": pack_store(ref_layers, f, (64, 64), 50)["bytes"],
                             "original": original_store(ref_layers, f, 50, mode, 640)["bytes"]}
                            for f in (2, 4, 8, 16, 32)]
    ref["growth_size"] = []
    for px in (256, 384, 512, 768, 1024):
        ll = attention_layout(sd15, (px // 8, px // 8))
        orig = original_store(ll, 8, 50, mode, 640)
        ref["growth_size"].append({"size": px, "pack": pack_store(ll, 8, (px // 8, px // 8), 50)["bytes"],
                                   "original": orig["bytes"], "original_layers_stored": orig["layers_stored"]})
    return ref


def materialise_original(bench, size: int, frames: int, steps: int, mode: str, min_channels: int) -> dict:
    """Run an inversion-like pass (CFG 1, source prompt only) through a clone of the UNet whose
    attention keeps every map the original keeps, as fp16 CPU tensors; sum their bytes."""
    import torch
    env = bench.env
    temporal = harness.PackModules(env.pack).temporal  # the pack's frame gathering: the real spatio-temporal keys
    model = env.model.clone()
    maps: list[tuple[str, tuple[int, ...], torch.Tensor]] = []
    calls = [0]

    def attention(q, k, v, heads):
        b, nq, inner = q.shape
        d = inner // heads
        qh = q.view(b, nq, heads, d).transpose(1, 2)
        kh = k.view(b, -1, heads, d).transpose(1, 2)
        vh = v.view(b, -1, heads, d).transpose(1, 2)
        p = (qh @ kh.transpose(-1, -2) * d ** -0.5).softmax(-1)
        return p, (p @ vh).transpose(1, 2).reshape(b, nq, inner)

    def keep(kind, p):
        b, heads, nq, nk = p.shape
        if nq <= MAX_QUERY:
            t = p.reshape(b * heads, nq, nk).to("cpu", torch.float16, copy=True)
            maps.append((kind, tuple(t.shape), t))

    def attn1(q, k, v, extra):
        chunk = q.shape[0] // len(extra["cond_or_uncond"])
        if mode != "per-frame" and q.shape[-1] >= min_channels:
            k, v = temporal.gather_frames(k, chunk, mode), temporal.gather_frames(v, chunk, mode)
        p, out = attention(q, k, v, extra["n_heads"])
        keep("self", p)
        return out

    def attn2(q, k, v, extra):
        p, out = attention(q, k, v, extra["n_heads"])
        keep("cross", p)
        return out

    def count(apply_model, args):
        calls[0] += 1
        return apply_model(args["input"], args["timestep"], **args["c"])

    dm = model.model.diffusion_model
    for l in attention_layout(dm, (size // 8, size // 8)):
        model.set_model_attn1_replace(attn1, l.block, l.number, l.depth)
        model.set_model_attn2_replace(attn2, l.block, l.number, l.depth)
    model.set_model_unet_function_wrapper(count)
    latent = bench.video_latent(frames, size, seed=1)
    with Meter(env.device) as m:
        bench.ksampler.sample(model, "disable", 0, steps, 1.0, "ddim", "ddim_uniform", bench.source_cond,
                              bench.source_cond, latent, 0, 10000, "disable")
    allocated = sum(t.numel() * t.element_size() for _, _, t in maps)
    layers = attention_layout(dm, (size // 8, size // 8))
    formula = original_store(layers, frames, calls[0], mode, min_channels)
    got = Counter((kind, shape) for kind, shape, _ in maps)
    want = Counter()  # layers with equal shapes add up: compare multiplicities
    for kind, shape in formula["map_shapes_per_step"]:
        want[(kind, shape)] += calls[0]
    maps.clear()
    return {"size": size, "frames": frames, "steps": calls[0], "mode": mode, "min_channels": min_channels,
            "maps": sum(got.values()), "allocated_bytes": allocated, "formula_bytes": formula["bytes"],
            "shapes_match": got == want, "match": allocated == formula["bytes"] and got == want,
            "seconds": m.result["seconds"], "peak_rss_delta": m.result["peak_rss_delta"]}
