"""FateZero inside real ComfyUI graphs: ControlNet, LoRA, an inpainting checkpoint, other
attention and UNet patches (before and after the pack's nodes), combined and masked
conditioning, CFG 1.

For every combination, on the test checkpoint through the real loaders and nodes:
- with both replace fractions at 0 the edit equals the same graph without the pack;
- with fusion on, in every UNet call of the sampler the negative rows equal what the
  graph without the pack computes for the same input, the positive rows differ (they are
  fused), and a ControlNet's residuals reach both;
- the source row's attention inputs (q, k of every fused layer) equal the inversion's at
  the same timestep, whatever the edit rows carry.
The same graphs run through ComfyUI's executor on the real server at the end.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from dataclasses import dataclass, field
from typing import Callable

import engine_parts as parts
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "comfy_test_nodes"))
from image_token_attention import (chained_image_tokens, image_token_attention,  # noqa: E402  (the test server
                                   wrap_attention_replaces)                      # loads them as nodes)

SRC = "a silver jeep driving down a curvy road"
TGT = "a red jeep driving down a curvy road"
OTHER = "a mountain lake at sunset"
STEPS = 3
FRAMES = 2
SIZE = 128  # pixels: a 16x16 latent, every transformer layer is fused (<= 32x32 queries)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


@dataclass
class Graph:
    """One combination: what the inversion and fusion receive, what the sampler receives,
    and patches applied after the fusion node (to its output, and to the plain model of the
    graph without the pack)."""
    model: object
    clip: object
    source: list
    positive: list
    negative: list
    latent: dict
    after: Callable = lambda m: m
    cfg: float = 7.5
    control: bool = False


# -- the combinations ----------------------------------------------------------------------
def frames_pixels() -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")
    return torch.stack([torch.stack([x, y * (f + 1) / FRAMES, 1 - x], -1) for f in range(FRAMES)])


def half_mask() -> torch.Tensor:
    mask = torch.zeros(FRAMES, SIZE, SIZE)
    mask[:, :, : SIZE // 2] = 1.0
    return mask


def build_graph(name: str, node, sd15, graph_files, pack) -> Graph:
    model, clip, vae = sd15
    encode = lambda c, text: node("CLIPTextEncode").encode(c, text)[0]
    latent = {"samples": torch.randn(FRAMES, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(7)) * 4}
    g = Graph(model, clip, encode(clip, SRC), encode(clip, TGT), encode(clip, ""), latent)
    if name == "controlnet":
        (cnet,) = node("ControlNetLoader").load_controlnet(graph_files["controlnet"].name)
        g.positive, g.negative = node("ControlNetApplyAdvanced").apply_controlnet(
            g.positive, g.negative, cnet, frames_pixels(), 1.0, 0.0, 1.0)
        g.control = True
    elif name == "controlnet-inversion":  # on the inversion's conditioning too: the source row replays it
        (cnet,) = node("ControlNetLoader").load_controlnet(graph_files["controlnet"].name)
        apply = node("ControlNetApplyAdvanced").apply_controlnet
        g.source, _ = apply(g.source, g.negative, cnet, frames_pixels(), 0.8, 0.0, 1.0)
        g.positive, g.negative = apply(g.positive, g.negative, cnet, frames_pixels(), 1.0, 0.0, 1.0)
        g.control = True
    elif name == "lora":
        g.model, g.clip = node("LoraLoader").load_lora(model, clip, graph_files["loras"].name, 1.0, 1.0)
        g.source, g.positive, g.negative = encode(g.clip, SRC), encode(g.clip, TGT), encode(g.clip, "")
    elif name == "inpaint":
        g.model, g.clip, vae = node("CheckpointLoaderSimple").load_checkpoint(graph_files["checkpoints"].name)
        inpaint = node("InpaintModelConditioning").encode
        pixels, mask = frames_pixels(), half_mask()
        g.source, _, g.latent = inpaint(encode(g.clip, SRC), encode(g.clip, ""), pixels, vae, mask, False)
        g.positive, g.negative, _ = inpaint(encode(g.clip, TGT), encode(g.clip, ""), pixels, vae, mask, False)
    elif name == "sag-before":
        g.model = node("SelfAttentionGuidance").execute(model=model, scale=0.5, blur_sigma=2.0).result[0]
    elif name == "pag-after":
        g.after = lambda m: node("PerturbedAttentionGuidance").execute(model=m, scale=1.0).result[0]
    elif name == "freeu-after":
        g.after = lambda m: node("FreeU_V2").patch(m, 1.3, 1.4, 0.9, 0.2)[0]
    elif name == "sag-after":
        g.after = lambda m: node("SelfAttentionGuidance").execute(model=m, scale=0.5, blur_sigma=2.0).result[0]
    elif name == "ip-adapter-like":
        g.model = image_token_attention(model, 0.6)
    elif name == "chained-before":  # the IP-Adapter family's install on empty keys: a replace of its own
        g.model = chained_image_tokens(model, 0.6)
    elif name == "chained-after":  # on the pack's keys: `.add` onto the pack's replace
        g.after = lambda m: chained_image_tokens(m, 0.6)
    elif name == "wrap-after":  # calls the replace it finds inside its own
        g.after = lambda m: wrap_attention_replaces(m, 0.9)
    elif name == "combine":
        g.positive = node("ConditioningCombine").combine(g.positive, encode(clip, OTHER))[0]
    elif name == "set-mask":
        masked = node("ConditioningSetMask").append(g.positive, half_mask(), "default", 1.0)[0]
        g.positive = node("ConditioningCombine").combine(masked, encode(clip, OTHER))[0]
    elif name == "cfg1":
        g.cfg = 1.0
    else:
        raise ValueError(name)
    return g


COMBINATIONS = ["controlnet", "controlnet-inversion", "lora", "inpaint", "sag-before", "sag-after", "pag-after", "freeu-after",
                "ip-adapter-like", "chained-before", "chained-after", "wrap-after", "combine", "set-mask", "cfg1"]


# -- running a graph -----------------------------------------------------------------------
@contextlib.contextmanager
def spy_on_dispatch(dispatch, record):
    """Observe the pack's attention dispatcher (the pack's own code, not ComfyUI's)."""
    real = dispatch.Dispatcher.__call__

    def spy(self, attn, q, k, v, extra):
        record(self, attn, q, k, extra)
        return real(self, attn, q, k, v, extra)

    dispatch.Dispatcher.__call__ = spy
    try:
        yield
    finally:
        dispatch.Dispatcher.__call__ = real


def invert(node, pack, g: Graph):
    """The inversion, with the q and k its sampler call fed each layer: ``(call j, attn, block) -> (q, k)``."""
    seen = {}

    def record(dispatcher, attn, q, k, extra):
        fz = extra.get("fatezero")
        if fz is not None and fz.run is not None and fz.run.recorder is not None and fz.capture is not None:
            chunk = fz.chunk
            r = fz.roles.index("cond")
            key = (*extra["block"], extra["block_index"])
            seen[(fz.capture, attn, key)] = (q[r * chunk:(r + 1) * chunk].clone(), k[r * chunk:(r + 1) * chunk].clone())

    with spy_on_dispatch(pack.fatezero_attn.run.dispatch, record):
        latent, store, _, *_ = node("FateZeroDDIMInversion").invert(g.model, g.source, g.latent, STEPS, "per-frame", 0,
                                                                False, "alphas_cumprod[0] (authors)", "recompute")
    assert seen, "the spy saw no inversion call"
    return latent, store, seen


def fuse(node, g: Graph, store, cross: float, self_: float):
    return node("FateZeroAttentionFusion").patch(g.model, store, g.clip, SRC, TGT, cross, self_, "auto", "", "")[0]


def sample(node, model, g: Graph, latent):
    return node("KSamplerAdvanced").sample(model, "disable", 0, STEPS, g.cfg, "ddim", "ddim_uniform", g.positive,
                                           g.negative, latent, 0, 10000, "disable")[0]["samples"]


def reference_call(fz, plain_model, apply_model, args: dict, edit_model=None) -> torch.Tensor:
    """The same UNet call (same rows, inputs, controls) as the graph without the pack makes it:
    the plain model's patches in place of the pack's, per-call patches (PAG's) kept (those
    of ``edit_model``'s own options are the plain model's already)."""
    c = dict(args["c"])
    opts = {k: v for k, v in c["transformer_options"].items() if k != "fatezero"}
    plain_opts = plain_model.model_options.get("transformer_options", {})
    replace = {attn: dict(table) for attn, table in plain_opts.get("patches_replace", {}).items()}
    installed = {} if edit_model is None else edit_model.model_options["transformer_options"].get("patches_replace", {})
    for attn, table in opts.get("patches_replace", {}).items():
        for key, fn in table.items():
            if not isinstance(fn, fz.run.composition.AttentionReplace) and fn is not installed.get(attn, {}).get(key):
                replace.setdefault(attn, {})[key] = fn
    opts["patches_replace"] = replace
    opts["patches"] = plain_opts.get("patches", {})
    c["transformer_options"] = opts
    wrapper = plain_model.model_options.get("model_function_wrapper")
    if wrapper is not None:
        return wrapper(apply_model, {**args, "c": c})
    return apply_model(args["input"], args["timestep"], **c)


@pytest.fixture(scope="module", params=COMBINATIONS)
def combo(request, node, sd15, graph_files, pack):
    g = build_graph(request.param, node, sd15, graph_files, pack)
    latent, store, seen = invert(node, pack, g)
    return request.param, g, latent, store, seen


def test_zero_fractions_equal_the_graph_without_the_pack(node, combo):
    name, g, latent, store, _ = combo
    without = sample(node, g.after(g.model), g, latent)
    with_pack = sample(node, g.after(fuse(node, g, store, 0.0, 0.0)), g, latent)
    assert torch.isfinite(with_pack).all()
    torch.testing.assert_close(with_pack, without, rtol=1e-5, atol=1e-5 * float(without.abs().max()))


def test_fused_edit_keeps_every_row_and_the_source_row_is_the_inversions(node, combo, pack):
    name, g, latent, store, seen = combo
    schedule = pack.fatezero_attn.edit.schedule
    fused = g.after(fuse(node, g, store, 0.8, 0.8))
    plain = g.after(g.model)
    ours = fused.model_options["model_function_wrapper"]
    plan = ours.__self__.plan
    assert plan.fused_steps == STEPS  # int(0.8 * 4) = 3 cross steps: every step fuses something
    calls = []

    def fresh(args: dict) -> dict:
        """The UNet pops control residuals as it applies them: each run gets its own lists."""
        control = args["c"].get("control")
        if control is None:
            return args
        return {**args, "c": {**args["c"], "control": {k: list(v) for k, v in control.items()}}}

    def probe(apply_model, args):
        out = ours(apply_model, fresh(args))
        rows = args["cond_or_uncond"]
        chunk = out.shape[0] // len(rows)
        chunks = lambda t: [t[i * chunk:(i + 1) * chunk] for i in range(len(rows))]
        if 1 not in rows and g.cfg != 1.0:
            return out  # PAG's extra call of the positive: not the sampler's own
        k = schedule.edit_step(float(args["timestep"][0]), store.sigmas)
        ref = reference_call(pack.fatezero_attn, plain, apply_model, fresh(args), fused)
        record = {"step": k, "rows": rows, "diff": [rel(a, b) for a, b in zip(chunks(out), chunks(ref))],
                  "target": [plan.is_target(row[0]) for row in chunks(args["c"]["c_crossattn"])]}
        if g.control:
            assert args["c"].get("control") is not None, "ComfyUI built no control for this call"
            without = ours(apply_model, {**args, "c": {kk: v for kk, v in args["c"].items() if kk != "control"}})
            record["control"] = [rel(a, b) for a, b in zip(chunks(out), chunks(without))]
        if 0 in rows and k < plan.fused_steps:
            j = STEPS - 1 - k
            assert ours.__self__.run.source.step == k
            record["source"] = {layer: max(rel(q, seen[(j, *layer)][0]), rel(kk, seen[(j, *layer)][1]))
                                for layer, (q, kk) in ours.__self__.run.source.qk.items()}
            record["layers"] = len([s for s in seen if s[0] == j])
        calls.append(record)
        return out

    probed = fused.clone()
    probed.set_model_unet_function_wrapper(probe)
    edited = sample(node, probed, g, latent)
    assert torch.isfinite(edited).all()
    steps_seen = sorted({c["step"] for c in calls if 0 in c["rows"]})
    assert steps_seen == list(range(STEPS)), calls
    for c in calls:
        for role, d, target in zip(c["rows"], c["diff"], c["target"]):
            if role == 1 or not target:  # a positive of another prompt (ConditioningCombine) is not fused
                assert d < 1e-5, f"{name}: rows not fused differ from the graph without the pack at step {c['step']}: {d}"
        if "control" in c:
            assert min(c["control"]) > 1e-4, f"{name}: the ControlNet does not reach every row: {c['control']}"
        if "source" in c:
            assert len(c["source"]) == c["layers"] > 0
            worst = max(c["source"].values())
            assert worst < 1e-4, f"{name}: source row differs from the inversion at step {c['step']}: {worst}"
    fused_pos = [d for c in calls if c["step"] < plan.fused_steps
                 for role, d, target in zip(c["rows"], c["diff"], c["target"]) if role == 0 and target]
    assert fused_pos and min(fused_pos) > 1e-4, f"{name}: positive rows not fused: {fused_pos}"


def test_cache_mode_edits_like_the_replayed_source_row(node, combo):
    """The cache holds the inversion call's own q and k, so with whatever the graph adds
    (ControlNet on the inversion, patches before and after the pack) the edit is the same."""
    name, g, latent, store, _ = combo
    cached_latent, cached, _, *_ = node("FateZeroDDIMInversion").invert(
        g.model, g.source, g.latent, STEPS, "per-frame", 0, False, "alphas_cumprod[0] (authors)", "cache", 0.8)
    assert cached.info.store_mode == "cache" and len(cached.cache.calls) == STEPS
    torch.testing.assert_close(cached_latent["samples"], latent["samples"], rtol=0, atol=0)
    recomputed = sample(node, g.after(fuse(node, g, store, 0.8, 0.8)), g, latent)
    from_cache = sample(node, g.after(fuse(node, g, cached, 0.8, 0.8)), g, cached_latent)
    torch.testing.assert_close(from_cache, recomputed, rtol=1e-5, atol=1e-5 * float(recomputed.abs().max()))


# -- nothing is dropped without an error ----------------------------------------------------
def expect_error(fn, *fragments) -> str:
    with pytest.raises(ValueError) as e:
        fn()
    for f in fragments:
        assert f in str(e.value), f"{f!r} not in {str(e.value)!r}"
    return str(e.value)


@pytest.fixture(scope="module")
def plain_graph(node, sd15, graph_files, pack):
    g = build_graph("cfg1", node, sd15, graph_files, pack)
    latent, store, _ = invert(node, pack, g)
    return g, latent, store


def test_lora_added_or_removed_between_inversion_and_fusion_is_refused(node, sd15, graph_files, pack, plain_graph):
    g, _, store = plain_graph
    lora_model, lora_clip = node("LoraLoader").load_lora(g.model, g.clip, graph_files["loras"].name, 0.7, 1.0)
    added = Graph(lora_model, g.clip, g.source, g.positive, g.negative, g.latent)
    msg = expect_error(lambda: fuse(node, added, store, 0.8, 0.8), "FateZero Attention Fusion", "'model'",
                       "weight patches: at inversion none, now", "strength 0.7", "same MODEL")
    print(msg)
    lora_graph = build_graph("lora", node, sd15, graph_files, pack)
    _, lora_store, _ = invert(node, pack, lora_graph)
    removed = Graph(g.model, lora_graph.clip, lora_graph.source, lora_graph.positive, lora_graph.negative, g.latent)
    expect_error(lambda: fuse(node, removed, lora_store, 0.8, 0.8), "weight patches: at inversion 120 patched weights")


def test_lora_after_the_fusion_node_stops_sampling(node, graph_files, plain_graph):
    g, latent, store = plain_graph
    fused = fuse(node, g, store, 0.8, 0.8)
    with_lora, _ = node("LoraLoader").load_lora(fused, g.clip, graph_files["loras"].name, 1.0, 1.0)
    expect_error(lambda: sample(node, with_lora, g, latent), "FateZero Attention Fusion",
                 "between FateZero Attention Fusion and the sampler", "On the sampler node")


def test_a_wrapper_set_after_the_fusion_node_that_drops_ours_stops_sampling(node, plain_graph):
    g, latent, store = plain_graph
    fused = fuse(node, g, store, 0.8, 0.8).clone()
    fused.set_model_unet_function_wrapper(lambda apply_model, args: apply_model(args["input"], args["timestep"],
                                                                                **args["c"]))
    expect_error(lambda: sample(node, fused, g, latent), "FateZero Attention Fusion", "replaced it",
                 "On the sampler node")


def test_controlnet_of_the_inversion_cannot_come_from_a_file(node, pack, graph_files, plain_graph, tmp_path):
    g, _, _ = plain_graph
    (cnet,) = node("ControlNetLoader").load_controlnet(graph_files["controlnet"].name)
    source, _ = node("ControlNetApplyAdvanced").apply_controlnet(g.source, g.negative, cnet, frames_pixels(), 1.0,
                                                                 0.0, 1.0)
    controlled = Graph(g.model, g.clip, source, g.positive, g.negative, g.latent)
    _, store, _ = invert(node, pack, controlled)
    assert store.info.source_control and store.extra["source_control"] is not None
    fuse(node, controlled, store, 0.8, 0.8)  # in the same graph: replayed (test_fused_edit_... checks how)
    pack.fatezero_attn.store.store_file.save_store(store, tmp_path / "store.safetensors")
    loaded = pack.fatezero_attn.store.store_file.load_store(tmp_path / "store.safetensors")
    assert loaded.info.source_control
    expect_error(lambda: fuse(node, controlled, loaded, 0.8, 0.8), "FateZero Attention Fusion", "'attention_store'",
                 "ControlNet", "directly")


def test_area_conditioning_on_the_positive_is_refused(node, plain_graph):
    g, latent, store = plain_graph
    area = node("ConditioningSetArea").append(g.positive, 64, 64, 0, 0, 1.0)[0]
    boxed = Graph(g.model, g.clip, g.source, area, g.negative, g.latent)
    expect_error(lambda: sample(node, fuse(node, g, store, 0.8, 0.8), boxed, latent), "FateZero Attention Fusion",
                 "whole frames", "On the sampler node")


def test_other_patch_composes_with_spatio_temporal_keys(pack):
    """Rows FateZero does not fuse get the other patch's output when the layer is per
    frame, and that patch's change added to the spatio-temporal output when it is not."""
    import comfy.ldm.modules.attention as attention
    frames, heads = 3, 2
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2 * frames, 16, 8, generator=g) for _ in range(3))
    other = lambda q_, k_, v_, extra: attention.optimized_attention(q_, k_, v_ * 2 + 1, extra["n_heads"])
    key = ("output", 1, 0)
    extra = {"n_heads": heads, "block": key[:2], "block_index": 0, "original_shape": [frames, 4, 4, 4],
             "activations_shape": [2 * frames, 8, 4, 4], "cond_or_uncond": [0, 1],
             "fatezero": parts.call_info(pack, ["cond", "uncond"], frames, other_patches={("attn1", key): other})}
    per_frame = parts.dispatcher(pack, "per-frame")("attn1", q, k, v, extra)
    assert torch.equal(per_frame, other(q, k, v, extra))  # exactly as without the pack
    out = parts.dispatcher(pack, "middle")("attn1", q, k, v, extra)
    kt, vt = (pack.fatezero_attn.edit.temporal.gather_frames(t, frames, "middle") for t in (k, v))
    expect = other(q, k, v, extra) - attention.optimized_attention(q, k, v, heads) + \
        attention.optimized_attention(q, kt, vt, heads)
    torch.testing.assert_close(out, expect)


# -- the same graphs through ComfyUI's executor on the real server ---------------------------


def server_graph(name: str, ckpt: str, files: dict) -> dict:
    """API-format graph: video -> VAEEncode -> inversion -> fusion -> [patches] -> KSamplerAdvanced -> SaveLatent."""
    text = lambda t, clip: {"class_type": "CLIPTextEncode", "inputs": {"text": t, "clip": clip}}
    g = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "video": {"class_type": "FateZeroLoadVideo", "inputs": {
            "video": "bikes.mp4", "frame_count": FRAMES, "start_frame": 0, "every_nth": 1,
            "width": SIZE, "height": SIZE, "resize": "center crop"}},
        "latent": {"class_type": "VAEEncode", "inputs": {"pixels": ["video", 0], "vae": ["ckpt", 2]}},
        "mask": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": SIZE, "height": SIZE}},
    }
    model, clip = ["ckpt", 0], ["ckpt", 1]
    if name == "lora":
        g["lora"] = {"class_type": "LoraLoader", "inputs": {"model": model, "clip": clip, "strength_model": 1.0,
                                                           "strength_clip": 1.0, "lora_name": files["loras"].name}}
        model, clip = ["lora", 0], ["lora", 1]
    if name == "inpaint":
        g["ckpt"]["inputs"]["ckpt_name"] = files["checkpoints"].name
    if name == "sag-before":
        g["sag"] = {"class_type": "SelfAttentionGuidance", "inputs": {"model": model, "scale": 0.5, "blur_sigma": 2.0}}
        model = ["sag", 0]
    if name in ("ip-adapter-like", "chained-before"):
        cls = "FateZeroTestImageTokenAttention" if name == "ip-adapter-like" else "FateZeroTestChainedImageTokens"
        g["ip"] = {"class_type": cls, "inputs": {"model": model, "weight": 0.6}}
        model = ["ip", 0]
    g.update(src=text(SRC, clip), tgt=text(TGT, clip), neg=text("", clip), other=text(OTHER, clip))
    source, positive, negative, latent = ["src", 0], ["tgt", 0], ["neg", 0], ["latent", 0]
    if name == "inpaint":
        for key, cond in (("inp_src", source), ("inp_edit", positive)):
            g[key] = {"class_type": "InpaintModelConditioning", "inputs": {
                "positive": cond, "negative": negative, "vae": ["ckpt", 2], "pixels": ["video", 0],
                "mask": ["mask", 0], "noise_mask": False}}
        source, positive, negative, latent = ["inp_src", 0], ["inp_edit", 0], ["inp_edit", 1], ["inp_src", 2]
    g["inv"] = {"class_type": "FateZeroDDIMInversion", "inputs": {
        "model": model, "source_conditioning": source, "latent": latent, "steps": STEPS, "temporal_mode": "middle",
        "temporal_min_channels": 640, "video_groupnorm": True, "clean_sigma": "alphas_cumprod[0] (authors)"}}
    g["fuse"] = {"class_type": "FateZeroAttentionFusion", "inputs": {
        "model": model, "attention_store": ["inv", 1], "clip": clip, "source_prompt": SRC, "target_prompt": TGT,
        "cross_replace_steps": 0.8, "self_replace_steps": 0.8, "mapping": "auto", "reweight": "",
        "cross_replace_words": ""}}
    edit_model = ["fuse", 0]
    after = {"sag-after": ("SelfAttentionGuidance", {"scale": 0.5, "blur_sigma": 2.0}),
             "pag-after": ("PerturbedAttentionGuidance", {"scale": 1.0}),
             "freeu-after": ("FreeU_V2", {"b1": 1.3, "b2": 1.4, "s1": 0.9, "s2": 0.2}),
             "chained-after": ("FateZeroTestChainedImageTokens", {"weight": 0.6}),
             "wrap-after": ("FateZeroTestWrapReplaces", {"scale": 0.9})}
    if name in after:
        cls, inputs = after[name]
        g["after"] = {"class_type": cls, "inputs": {"model": edit_model, **inputs}}
        edit_model = ["after", 0]
    if name == "controlnet-inversion":
        g["cnet"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": files["controlnet"].name}}
        g["apply_src"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": source, "negative": negative, "control_net": ["cnet", 0], "image": ["video", 0],
            "strength": 0.8, "start_percent": 0.0, "end_percent": 1.0}}
        source = ["apply_src", 0]
        g["inv"]["inputs"]["source_conditioning"] = source
    if name in ("controlnet", "controlnet-inversion"):
        g["cnet"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": files["controlnet"].name}}
        g["apply"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": positive, "negative": negative, "control_net": ["cnet", 0], "image": ["video", 0],
            "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}}
        positive, negative = ["apply", 0], ["apply", 1]
    if name == "combine":
        g["combine"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": positive,
                                                                        "conditioning_2": ["other", 0]}}
        positive = ["combine", 0]
    if name == "set-mask":
        g["masked"] = {"class_type": "ConditioningSetMask", "inputs": {
            "conditioning": positive, "mask": ["mask", 0], "strength": 0.5, "set_cond_area": "default"}}
        g["combine"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["masked", 0],
                                                                        "conditioning_2": ["other", 0]}}
        positive = ["combine", 0]
    g["sample"] = {"class_type": "KSamplerAdvanced", "inputs": {
        "model": edit_model, "add_noise": "disable", "noise_seed": 0, "steps": STEPS,
        "cfg": 1.0 if name == "cfg1" else 7.5, "sampler_name": "ddim", "scheduler": "ddim_uniform",
        "positive": positive, "negative": negative, "latent_image": ["inv", 0], "start_at_step": 0,
        "end_at_step": 10000, "return_with_leftover_noise": "disable"}}
    g["save"] = {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0],
                                                         "filename_prefix": f"composition/{name}"}}
    return g


@pytest.fixture(scope="module")
def graph_server(server, graph_files):
    """The test server, with the LoRA next to the checkpoint and ControlNet it already sees."""
    return server


@pytest.mark.parametrize("name", COMBINATIONS)
def test_graph_runs_through_the_real_executor(graph_server, checkpoint_name, graph_files, name):
    entry = graph_server.run(server_graph(name, checkpoint_name, graph_files), timeout=600)
    item = entry["outputs"]["save"]["latents"][0]
    path = graph_server.output_dir / item["subfolder"] / item["filename"]
    import safetensors.torch
    samples = safetensors.torch.load_file(str(path))["latent_tensor"]
    assert samples.shape == (FRAMES, 4, SIZE // 8, SIZE // 8) and torch.isfinite(samples).all()
    assert "could not be applied" not in graph_server.log()


def test_hooked_lora_on_the_sampler_conditioning_is_refused(node, graph_files, plain_graph):
    g, latent, store = plain_graph
    hooks = node("CreateHookLora").create_hook(graph_files["loras"].name, 1.0, 0.0)[0]
    hooked = node("ConditioningSetProperties").set_properties(g.positive, 1.0, "default", hooks=hooks)[0]
    edit = Graph(g.model, g.clip, g.source, hooked, g.negative, g.latent, cfg=g.cfg)
    expect_error(lambda: sample(node, fuse(node, g, store, 0.8, 0.8), edit, latent), "FateZero Attention Fusion",
                 "hooks", "On the sampler node")


def test_area_or_hooks_on_the_inversion_conditioning_are_refused_before_it_runs(node, graph_files, plain_graph):
    g, _, _ = plain_graph
    area = node("ConditioningSetArea").append(g.source, 64, 64, 0, 0, 1.0)[0]
    expect_error(lambda: node("FateZeroDDIMInversion").invert(g.model, area, g.latent, STEPS, "per-frame", 0, False,
                                                              "alphas_cumprod[0] (authors)"),
                 "FateZero DDIM Inversion", "'source_conditioning'", "area", "plain CLIPTextEncode")


def test_patch_settings_are_part_of_the_model(node, pack, plain_graph):
    g, _, _ = plain_graph
    freeu = lambda m, b1: node("FreeU_V2").patch(m, b1, 1.4, 0.9, 0.2)[0]
    inverted = Graph(freeu(g.model, 1.3), g.clip, g.source, g.positive, g.negative, g.latent)
    _, store, _ = invert(node, pack, inverted)
    fuse(node, inverted, store, 0.8, 0.8)  # the same patch, with the same settings: accepted
    other = Graph(freeu(g.model, 1.1), g.clip, g.source, g.positive, g.negative, g.latent)
    expect_error(lambda: fuse(node, other, store, 0.8, 0.8), "transformer patches: at inversion output_block_patch",
                 "1.3", "1.1")


def test_a_later_patch_that_calls_the_packs_own_is_composed_once(node, pack, plain_graph):
    """A node after the fusion node that wraps the replace it finds (calls it inside its own):
    a wrapper that returns its inner output unchanged leaves the edit bit for bit as it was."""
    g, latent, store = plain_graph
    fused = fuse(node, g, store, 0.8, 0.8)
    alone = sample(node, fused, g, latent)
    calls = []

    def counted(model, scale):
        wrapped = wrap_attention_replaces(model, scale)
        for attn in ("attn1", "attn2"):
            table = wrapped.model_options["transformer_options"]["patches_replace"][attn]
            for key, fn in list(table.items()):
                table[key] = lambda q, k, v, extra, fn=fn: calls.append(1) or fn(q, k, v, extra)
        return wrapped

    assert torch.equal(sample(node, counted(fused, 1.0), g, latent), alone) and calls
    scaled = sample(node, counted(fused, 0.9), g, latent)  # the wrapper's own change does reach the edit
    assert torch.isfinite(scaled).all() and rel(scaled, alone) > 1e-3


def test_ip_adapter_protocol_after_the_fusion_node_chains_onto_the_packs_replace(node, pack, plain_graph):
    """IP-Adapter's install helper on the pack's keys calls ``.add`` on the pack's replace:
    the callback joins the edit, and the fusion node's own MODEL does not get it."""
    g, latent, store = plain_graph
    fused = fuse(node, g, store, 0.8, 0.8)
    alone = sample(node, fused, g, latent)
    chained = chained_image_tokens(fused, 0.6)
    for attn in ("attn1", "attn2"):
        for key, fn in fused.model_options["transformer_options"]["patches_replace"][attn].items():
            theirs = chained.model_options["transformer_options"]["patches_replace"][attn][key]
            assert isinstance(fn, pack.fatezero_attn.run.composition.AttentionReplace) and not fn.callbacks, "the fusion node's MODEL changed"
            assert isinstance(theirs, pack.fatezero_attn.run.composition.AttentionReplace) and len(theirs.callbacks) == (attn == "attn2")
    with_ip = sample(node, chained, g, latent)
    assert torch.isfinite(with_ip).all() and rel(with_ip, alone) > 1e-3
    # a zero-weight callback adds exact zeros; the fused MODEL sampled again is unchanged
    assert torch.equal(sample(node, chained_image_tokens(fused, 0.0), g, latent), alone)
    assert torch.equal(sample(node, fused, g, latent), alone)


def test_a_resolution_patch_after_the_fusion_node_stops_sampling(node, plain_graph):
    """Kohya Deep Shrink on the fusion node's output changes the edit rows' query lengths only."""
    g, latent, store = plain_graph
    fused = fuse(node, g, store, 0.8, 0.8)
    shrunk = node("PatchModelAddDownscale").execute(model=fused, block_number=1, downscale_factor=2.0,
                                                    start_percent=0.0, end_percent=1.0, downscale_after_skip=True,
                                                    downscale_method="bicubic", upscale_method="bicubic").result[0]
    expect_error(lambda: sample(node, shrunk, g, latent), "FateZero Attention Fusion", "query positions",
                 "Deep Shrink", "On the sampler node")


def test_identity_wrapper_on_the_server_leaves_the_edit_bit_for_bit(graph_server, checkpoint_name, graph_files):
    import safetensors.torch
    latents = []
    for name, scale in (("plain", None), ("wrap-after", 1.0)):
        graph = server_graph(name, checkpoint_name, graph_files)
        if scale is not None:
            graph["after"]["inputs"]["scale"] = scale
        graph["save"]["inputs"]["filename_prefix"] = f"composition/identity-{name}"
        item = graph_server.run(graph, timeout=600)["outputs"]["save"]["latents"][0]
        latents.append(safetensors.torch.load_file(str(graph_server.output_dir / item["subfolder"] / item["filename"])))
    assert torch.equal(latents[0]["latent_tensor"], latents[1]["latent_tensor"])


def test_a_positive_that_is_not_the_target_prompt_stops_sampling(node, plain_graph):
    g, latent, store = plain_graph
    other = node("CLIPTextEncode").encode(g.clip, "a blue jeep driving down a curvy road")[0]
    wrong = Graph(g.model, g.clip, g.source, other, g.negative, g.latent, cfg=g.cfg)
    expect_error(lambda: sample(node, fuse(node, g, store, 0.8, 0.8), wrong, latent), "FateZero Attention Fusion",
                 "'target_prompt'", TGT, "On the sampler node")


def test_combined_positives_fuse_and_blend_only_the_target_chunk(node, pack, plain_graph):
    """ConditioningCombine(target, other): the latent blend's target maps come from the target's
    rows alone. At the first step both runs see the same input, so the maps are the target-only run's."""
    import comfy.sample
    g, latent, store = plain_graph
    blend = node("FateZeroBlendMask").make(store, g.clip, SRC, "jeep", 0.3, True, "red, jeep")[0]
    fused = node("FateZeroAttentionFusion").patch(g.model, store, g.clip, SRC, TGT, 0.8, 0.8, "auto", "", "",
                                                  blend)[0]
    patch = fused.model_options["model_function_wrapper"].__self__
    combined = node("ConditioningCombine").combine(g.positive, node("CLIPTextEncode").encode(g.clip, OTHER)[0])[0]
    first_maps = []

    def run(positive):
        def keep_first(i, *_):
            if i == 0:
                first_maps.append(patch.run.target_maps.clone())
        comfy.sample.sample(fused, torch.zeros_like(latent["samples"]), STEPS, 7.5, "ddim", "ddim_uniform", positive,
                            g.negative, latent["samples"], disable_noise=True, callback=keep_first,
                            disable_pbar=True, seed=0)

    run(g.positive)
    run(combined)
    alone, with_other = first_maps
    assert alone.shape[0] == with_other.shape[0] == FRAMES
    torch.testing.assert_close(with_other, alone, rtol=1e-5, atol=1e-6)


def test_the_inversions_controlnet_is_readied_and_cleaned_up_at_every_run(node, pack, sd15, graph_files):
    """Between queue runs ComfyUI may offload a ControlNet: the source row readies the
    inversion's control at every run (models loaded) and cleans it up after, as ComfyUI does
    with a sampler's controls, so runs repeat each other."""
    import comfy.model_management
    g = build_graph("controlnet-inversion", node, sd15, graph_files, pack)
    latent, store, _ = invert(node, pack, g)
    control = store.extra["source_control"]
    fused = fuse(node, g, store, 0.8, 0.8)
    first = sample(node, fused, g, latent)
    assert control.timestep_range is None, "the source row's control was left prepared after the run"
    comfy.model_management.unload_all_models()
    assert torch.equal(sample(node, fused, g, latent), first)
    assert control.timestep_range is None
