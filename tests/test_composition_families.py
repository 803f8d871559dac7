"""The composition assertions of ``test_composition.py`` on SDXL (with its ``y``) and SD2-v.

On the random SDXL and SD 2.x 768 v-prediction checkpoints (``models_sd2_sdxl.py``) loaded by the
real CheckpointLoaderSimple; per-frame attention without video GroupNorm, 2 frames, 3 steps,
every transformer block a fused layer; a plain graph and graphs with other nodes' patches
(PAG, and SAG or FreeU, after the fusion node; an IP-Adapter-like attn2 replace before the
inversion or after the fusion node), ConditioningCombine and CFG 1. With
``test_composition``'s helpers (inversion spy, fusion, sampler, reference call):
1. in every fused step the source row's q and k at every fused layer equal the inversion
   call's at the same timestep;
2. in every UNet call of the sampler the negative rows (and a combined other prompt's) equal
   the graph without the pack; the target's rows differ from it at every fused step;
3. at every fused attention call where another node's replace sits on the layer, the fused
   rows equal the fused rows without that replace plus its change to plain attention, and
   the other rows equal that replace's output, as without the pack.
"""
from __future__ import annotations

import contextlib
import dataclasses

import pytest
import torch

import test_composition as tc
from image_token_attention import chained_image_tokens, image_token_attention, wrap_attention_replaces

assert tc.FRAMES == 2 and tc.STEPS == 3

FAMILIES = ("SDXL", "SD2-v")
# The smallest size at which every fused layer attends over more than one position (each is
# fused: at most 64x64 / 48x48 queries): SDXL's test UNet is at 1/4 of the latent at its
# deepest, SD2's middle block at 1/8 (at 64 pixels a 1x1 map, whose self-attention is its value).
SIZES = {"SDXL": 64, "SD2-v": 128}
# FreeU_V2 scales the 2x and 4x model_channels levels: the SD2 test UNet has a 2x level, the
# SDXL one (every level 320 channels) has none, so SDXL gets SAG after the fusion node instead.
NAMES = {
    "SDXL": ["plain", "pag-after", "sag-after", "ip-before", "ip-after", "chained-before", "chained-after",
             "wrap-after", "combine", "cfg1"],
    "SD2-v": ["plain", "pag-after", "freeu-after", "ip-before", "ip-after", "combine", "cfg1"],
}
COMBOS = [(family, name) for family in FAMILIES for name in NAMES[family]]
# graphs whose other attention patch changes a fused layer's output (SAG's only records the map)
CHANGING = {"ip-before", "ip-after", "pag-after", "chained-before"}
IP_WEIGHT = 0.6


@pytest.fixture(scope="module")
def families(node, family_models):
    """Family -> (MODEL, CLIP, encode(text) with the prompt encodings cached). The models are
    the session's shared ones (conftest's ``family_models``, one large family held at a time),
    so only the encodings are kept here; the last one is released when the module ends."""
    texts = {}

    def get(family):
        model, clip, _ = family_models(family)

        def encode(text):
            if (family, text) not in texts:
                texts[(family, text)] = node("CLIPTextEncode").encode(clip, text)[0]
            return texts[(family, text)]
        return model, clip, encode
    yield get
    family_models.drop()  # the large model still held is not carried into the next module


def video(model, size: int) -> dict:
    """A smooth "video" latent at the VAE's scale, one image drifting over the frames (as
    ``test_model_families.video``, at this size)."""
    g = torch.Generator().manual_seed(12)
    side = size // 8
    base = torch.nn.functional.interpolate(torch.randn(1, 4, 4, 4, generator=g), size=(side + 4, side + 4),
                                           mode="bilinear")
    frames = torch.cat([base[..., i:i + side, 2:2 + side] for i in range(tc.FRAMES)])
    return {"samples": frames / frames.std() / model.model.latent_format.scale_factor}


def build(family: str, name: str, node, families) -> tc.Graph:
    model, clip, encode = families(family)
    g = tc.Graph(model, clip, encode(tc.SRC), encode(tc.TGT), encode(""), video(model, SIZES[family]))
    if name == "pag-after":
        g.after = lambda m: node("PerturbedAttentionGuidance").execute(model=m, scale=1.0).result[0]
    elif name == "sag-after":
        g.after = lambda m: node("SelfAttentionGuidance").execute(model=m, scale=0.5, blur_sigma=2.0).result[0]
    elif name == "freeu-after":
        g.after = lambda m: node("FreeU_V2").patch(m, 1.3, 1.4, 0.9, 0.2)[0]
    elif name == "ip-before":
        g.model = image_token_attention(model, IP_WEIGHT)
    elif name == "ip-after":  # on the fusion node's output (and on the plain model of the graph without the pack)
        g.after = lambda m: image_token_attention(m, IP_WEIGHT)
    elif name == "chained-before":  # the IP-Adapter family's helper on empty keys: its own replace
        g.model = chained_image_tokens(model, IP_WEIGHT)
    elif name == "chained-after":  # on SDXL's (block, id, index) keys, the pack's: `.add` onto the pack's replace
        g.after = lambda m: chained_image_tokens(m, IP_WEIGHT)
    elif name == "wrap-after":  # calls the replace it finds inside its own: used as it is
        g.after = lambda m: wrap_attention_replaces(m, 0.9)
    elif name == "combine":
        g.positive = node("ConditioningCombine").combine(g.positive, encode(tc.OTHER))[0]
    elif name == "cfg1":
        g.cfg = 1.0
    else:
        assert name == "plain", name
    return g


@pytest.fixture(scope="module")
def inversions(node, pack):
    """One inversion per (family, model): graphs that patch only after the fusion node share it.
    Only the current family's are kept (the tests run family by family), so that nothing of
    the previous family's model outlives it."""
    cache = {}

    def get(family, g: tc.Graph, patched_before: str | None):
        if any(kept != family for kept, _ in cache):
            cache.clear()
        if (family, patched_before) not in cache:
            cache[(family, patched_before)] = tc.invert(node, pack, g)
        return cache[(family, patched_before)]
    return get


@contextlib.contextmanager
def composition_checks(dispatch, checks: list):
    """At every fused attention call with another node's replace on the layer, compare the
    pack's output with the fused output without that replace plus its change to plain attention."""
    from comfy.ldm.modules.attention import optimized_attention
    real = dispatch.Dispatcher.__call__

    def spy(self, attn, q, k, v, extra):
        fz = extra.get("fatezero")
        plan = fz.run.plan if fz is not None and fz.run is not None else None
        if fz is None or plan is None or "cond" not in fz.roles or fz.step is None or fz.source is None:
            return real(self, attn, q, k, v, extra)  # not an edit call that fuses (inversion, source pass, ...)
        key = (*extra["block"], extra.get("block_index", 0))
        others = fz.other_patches  # CallInfo: other nodes' replaces per (attn, block)
        other = others.get((attn, key))
        if other is None or q.shape[1] > plan.max_query or fz.step >= plan.replace_steps(attn):
            return real(self, attn, q, k, v, extra)
        # computed first, on copies: a replace may return (and the pack then write into) its input
        copies = lambda: (q.clone(), k.clone(), v.clone())
        without_info = dataclasses.replace(fz, other_patches={kk: fn for kk, fn in others.items() if kk != (attn, key)})
        without = real(self, attn, *copies(), {**extra, "fatezero": without_info})
        changed = other(*copies(), extra)
        plain = optimized_attention(*copies(), extra["n_heads"])
        out = real(self, attn, q, k, v, extra)
        chunk = fz.chunk
        for r, role in enumerate(fz.roles):
            rows = slice(r * chunk, (r + 1) * chunk)
            got = out[rows]
            expect = without[rows] + (changed[rows] - plain[rows]) if role == "cond" else changed[rows]
            atol = 1e-5 * float(expect.abs().max())
            close = lambda a, b: bool(torch.allclose(a, b, rtol=1e-5, atol=atol))
            check = {"step": fz.step, "attn": attn, "key": key, "role": role, "error": None}
            try:
                torch.testing.assert_close(got, expect, rtol=1e-5, atol=atol)
            except AssertionError as e:
                check["error"] = str(e)
            if role == "cond":
                check["fused"] = tc.rel(without[rows], plain[rows])  # the rows are fused at all
                # the comparison tells the composition from dropping the patch and from not fusing
                check["distinguishes"] = not close(got, without[rows]) and not close(got, changed[rows])
            checks.append(check)
        return out

    dispatch.Dispatcher.__call__ = spy
    try:
        yield
    finally:
        dispatch.Dispatcher.__call__ = real


def prediction_rel(ms, sigma, x, out, ref) -> float:
    """``|out - ref| / |ref|`` measured on the model's prediction (eps or v) rather than on the
    denoised latent the UNet call returns: near the clean end the denoised latent is mostly the
    input, which would scale any difference down by sigma."""
    skip = ms.calculate_denoised(sigma, torch.zeros_like(x), x)  # the input's share of the denoised latent
    return float((out - ref).norm() / (skip - ref).norm().clamp_min(1e-12))


@pytest.mark.parametrize("family,name", COMBOS, ids=[f"{f}-{n}" for f, n in COMBOS])
def test_fused_edit_composes_on_the_family(node, pack, families, inversions, family, name):
    hooks, schedule = pack.fatezero_attn.run.patch, pack.fatezero_attn.edit.schedule
    g = build(family, name, node, families)
    assert pack.fatezero_attn.families.family_of(g.model).name == family
    latent, store, seen = inversions(family, g, name if name.endswith("-before") else None)
    assert store.info.model_family == family and store.info.temporal_mode == "per-frame"
    conds = store.source_inputs(torch.device("cpu"))
    if family == "SDXL":  # the source row replays the inversion's y (pooled CLIP-G and sizes)
        assert conds["y"].shape == (tc.FRAMES, 2816) and conds["y"].abs().max() > 0
    else:
        assert "y" not in conds
    layers = {(a, b) for a in ("attn1", "attn2") for b in pack.fatezero_attn.families.sd_unet.attention_blocks(g.model.model.diffusion_model)}
    assert {s[1:] for s in seen if s[0] == 0} == layers  # the inversion saw every layer
    assert min(seen[(0, "attn1", layer[1])][0].shape[1] for layer in layers) > 1  # no 1x1 map

    fused = g.after(tc.fuse(node, g, store, 0.8, 0.8))
    plain = g.after(g.model)
    ours = fused.model_options["model_function_wrapper"]
    plan = ours.__self__.plan
    assert plan.fused_steps == tc.STEPS
    ms = plain.get_model_object("model_sampling")
    target = g.positive[0][0][0]  # the target prompt's context as the sampler's rows carry it
    calls = []

    def probe(apply_model, args):
        out = ours(apply_model, args)
        rows = args["cond_or_uncond"]
        if 1 not in rows and g.cfg != 1.0:
            return out  # PAG's extra call of the positive: not the sampler's own
        chunk = out.shape[0] // len(rows)
        chunks = lambda t: [t[i * chunk:(i + 1) * chunk] for i in range(len(rows))]
        x, sigma = args["input"], args["timestep"]
        k = schedule.edit_step(float(sigma[0]), store.sigmas)
        ref = tc.reference_call(pack.fatezero_attn, plain, apply_model, args, fused)
        context = chunks(args["c"]["c_crossattn"])
        record = {"step": k, "rows": rows,
                  "target": [c[0].shape == target.shape and bool(torch.allclose(c[0], target, atol=1e-6))
                             for c in context],
                  "diff": [tc.rel(a, b) for a, b in zip(chunks(out), chunks(ref))],
                  "pred": [prediction_rel(ms, s, xx, a, b) for s, xx, a, b in
                           zip(chunks(sigma), chunks(x), chunks(out), chunks(ref))]}
        if family == "SDXL":  # every row of the edit's calls carries its own y
            record["y"] = args["c"].get("y") is not None and args["c"]["y"].shape == (x.shape[0], 2816)
        if 0 in rows and k < plan.fused_steps:
            j = tc.STEPS - 1 - k
            assert ours.__self__.run.source.step == k
            record["source"] = {layer: max(tc.rel(q, seen[(j, *layer)][0]), tc.rel(kk, seen[(j, *layer)][1]))
                                for layer, (q, kk) in ours.__self__.run.source.qk.items()}
        calls.append(record)
        return out

    probed = fused.clone()
    probed.set_model_unet_function_wrapper(probe)
    checks = []
    # a wrapper calls the pack's replace inside itself: its output is used as it is (no sum to check)
    with composition_checks(pack.fatezero_attn.run.dispatch, checks) if name != "wrap-after" else contextlib.nullcontext():
        edited = tc.sample(node, probed, g, latent)
    assert torch.isfinite(edited).all()
    label = f"{family}/{name}"
    assert sorted({c["step"] for c in calls if 0 in c["rows"]}) == list(range(tc.STEPS)), calls
    fused_pred = []
    for c in calls:
        assert c.get("y", True), f"{label}: a UNet call without y at step {c['step']}"
        for role, d, p, is_target in zip(c["rows"], c["diff"], c["pred"], c["target"]):
            if role == 1 or not is_target:  # 2. negative rows (and another prompt's positive) as without the pack
                assert max(d, p) < 1e-5, f"{label}: rows not fused differ from the graph without the pack at step " \
                                         f"{c['step']}: {d} (denoised), {p} (prediction)"
            elif c["step"] < plan.fused_steps:
                fused_pred.append(p)
        if "source" in c:  # 1. the source row's q, k at every fused layer are the inversion's
            assert set(c["source"]) == layers, f"{label}: fused layers {len(c['source'])} of {len(layers)}"
            worst = max(c["source"].values())
            assert worst < 1e-4, f"{label}: source row differs from the inversion at step {c['step']}: {worst}"
    # the target's rows are fused at every fused step: the row comparison above tells them apart
    assert len(fused_pred) >= tc.STEPS and min(fused_pred) > 1e-4, f"{label}: positive rows not fused: {fused_pred}"
    other_prompt = [not t for c in calls for role, t in zip(c["rows"], c["target"]) if role == 0]
    assert any(other_prompt) == (name == "combine")  # ConditioningCombine's other prompt reached the sampler

    # 3. other nodes' replaces on fused layers compose: fused + (patch - plain); other rows as without the pack
    failed = [c for c in checks if c["error"]]
    assert not failed, f"{label}: {len(failed)} of {len(checks)} calls: {failed[0]}"
    cond = [c for c in checks if c["role"] == "cond"]
    assert all(c["fused"] > 1e-4 for c in cond), f"{label}: fused rows equal plain attention"
    if name in CHANGING:
        assert cond and all(c["distinguishes"] for c in cond), \
            f"{label}: the comparison cannot tell the composition from a dropped patch: {cond[:3]}"
    if name == "chained-after":  # chained onto the pack's own replace: nothing else on the layers
        table = fused.model_options["transformer_options"]["patches_replace"]["attn2"]
        assert all(isinstance(fn, pack.fatezero_attn.run.composition.AttentionReplace) and len(fn.callbacks) == 1 for fn in table.values())
    if name.startswith(("ip-", "chained-before")):  # every attn2 layer of every fused step, with the negative rows
        covered = {(c["step"], ("attn2", c["key"])) for c in cond if c["attn"] == "attn2"}
        assert covered == {(k, layer) for k in range(tc.STEPS) for layer in layers if layer[0] == "attn2"}
        assert any(c["role"] == "uncond" for c in checks)
    elif name not in CHANGING and name not in ("sag-after", "wrap-after"):
        assert not checks  # no other replace on the layers: nothing to compose
