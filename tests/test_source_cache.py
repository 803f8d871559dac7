"""The two store modes: ``cache`` keeps the source row's fused-layer q and k from the
inversion and the edit reads them instead of running the source row; ``recompute`` runs the
source row again. Both give the same edited latents (every temporal mode, with and without
the blend mask), the size estimate made before inverting is the cache's size, and both
modes survive a save and load."""
from __future__ import annotations

import json

import pytest
import torch

SRC = "a silver jeep driving down a curvy road in the countryside"
TGT = "watercolor painting of a silver jeep driving down a curvy road in the countryside"
STEPS = 5
AUTHORS = "alphas_cumprod[0] (authors)"
MODES = ["per-frame", "middle", "current+middle", "first+previous"]


@pytest.fixture(scope="module")
def encode(node, sd15):
    return lambda text: node("CLIPTextEncode").encode(sd15[1], text)[0]


@pytest.fixture(scope="module")
def latent():
    return {"samples": torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(11)) * 4}


@pytest.fixture(scope="module")
def counted_model(tiny_model):
    """The tiny model with a UNet wrapper (on the MODEL both FateZero nodes receive) that
    counts the source row's own UNet calls."""
    model = tiny_model.clone()
    model.source_calls = 0

    def count(apply_model, args):
        if args["c"].get("transformer_options", {}).get("uuids") == ["fatezero-source"]:
            model.source_calls += 1
        return apply_model(args["input"], args["timestep"], **args["c"])

    model.set_model_unet_function_wrapper(count)
    return model


def invert(node, model, encode, latent, mode, store_mode, cache_replace_steps=0.8):
    return node("FateZeroDDIMInversion").invert(model, encode(SRC), latent, STEPS, mode, 0, True, AUTHORS,
                                                store_mode, cache_replace_steps)[:3]


def edit(node, model, store, sd15, encode, inverted, blend=None):
    fused = node("FateZeroAttentionFusion").patch(model, store, sd15[1], SRC, TGT, 0.8, 0.8, "auto",
                                                  "watercolor:10", "", blend)[0]
    model.source_calls = 0
    out = node("KSamplerAdvanced").sample(fused, "disable", 0, STEPS, 7.5, "ddim", "ddim_uniform", encode(TGT),
                                          encode(""), inverted, 0, 10000, "disable")[0]["samples"]
    return out, model.source_calls


@pytest.mark.parametrize("mode", MODES)
def test_cache_mode_edits_like_recompute(pack, node, counted_model, sd15, encode, latent, mode):
    fz = pack.fatezero_attn
    inverted, store, _ = invert(node, counted_model, encode, latent, mode, "cache")
    assert store.info.store_mode == "cache" and store.info.cache_steps == 4  # int(0.8 * 6) of 5 steps
    layers = fz.families.sd_layout.attention_layout(counted_model.model.diffusion_model, (16, 16))
    estimate = fz.store.source_cache.estimate_bytes(layers, 3, 4, mode, 0, fz.defaults.FUSE_MAX_QUERY, 4)
    assert estimate == store.cache.nbytes() > 0
    if mode == "middle":  # only the middle frame's self-attention keys are kept
        assert {k.shape[0] for (attn, _), (q, k) in store.cache.calls[STEPS - 1].items() if attn == "attn1"} == {1}
    for blend_words in ("", "silver, jeep"):
        blend = None
        if blend_words:
            blend = node("FateZeroBlendMask").make(store, sd15[1], SRC, blend_words, 0.3, True, "jeep")[0]
        cached, cached_calls = edit(node, counted_model, store, sd15, encode, inverted, blend)
        recomputed, recomputed_calls = edit(node, counted_model, store.without_cache(), sd15, encode, inverted, blend)
        assert (cached_calls, recomputed_calls) == (0, 4)  # fused steps 0..3: no source row when cached
        torch.testing.assert_close(cached, recomputed, rtol=1e-5, atol=1e-5)
    plain = node("KSamplerAdvanced").sample(counted_model, "disable", 0, STEPS, 7.5, "ddim", "ddim_uniform",
                                            encode(TGT), encode(""), inverted, 0, 10000, "disable")[0]["samples"]
    assert float((cached - plain).norm() / plain.norm()) > 1e-3  # the edit did fuse


def test_steps_beyond_the_cache_are_recomputed(node, counted_model, sd15, encode, latent):
    inverted, store, _ = invert(node, counted_model, encode, latent, "middle", "cache", 0.4)
    assert store.info.cache_steps == 2 and sorted(store.cache.calls) == [3, 4]  # edit steps 0 and 1
    mixed, calls = edit(node, counted_model, store, sd15, encode, inverted)
    recomputed, _ = edit(node, counted_model, store.without_cache(), sd15, encode, inverted)
    assert calls == 2  # fused steps 2 and 3 ran the source row
    torch.testing.assert_close(mixed, recomputed, rtol=1e-5, atol=1e-5)


def test_save_and_load_both_modes_and_version_2_files(pack, node, tiny_model, encode, latent, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file
    store_file = pack.fatezero_attn.store.store_file
    for store_mode in ("cache", "recompute"):
        _, store, _ = invert(node, tiny_model, encode, latent, "middle", store_mode)
        assert store.info.store_mode == store_mode and (store.cache is None) == (store_mode == "recompute")
        path = tmp_path / f"{store_mode}.safetensors"
        store_file.save_store(store, path)
        loaded = store_file.load_store(path)
        assert loaded.info == store.info and loaded.nbytes() == store.nbytes()
        if store.cache is not None:
            for j, layers in store.cache.calls.items():
                for name, (q, k) in layers.items():
                    assert torch.equal(loaded.cache.calls[j][name][0], q)
                    assert torch.equal(loaded.cache.calls[j][name][1], k)
    # a file written by the previous format (version 2) is a recompute store
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["fatezero_store"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    for new in ("store_mode", "cache_steps"):
        del meta[new]
    meta["format_version"] = 2
    old = tmp_path / "v2.safetensors"
    save_file(tensors, str(old), metadata={"fatezero_store": json.dumps(meta)})
    loaded = store_file.load_store(old)
    assert loaded.info.store_mode == "recompute" and loaded.cache is None


def test_auto_picks_by_size_and_cache_that_does_not_fit_is_refused(pack, node, tiny_model, encode):
    sc = pack.fatezero_attn.store.source_cache
    assert sc.choose_mode("auto", 10, 100) == "cache"
    assert sc.choose_mode("auto", 60, 100) == "recompute"
    assert sc.choose_mode("cache", 60, 100) == "cache"
    assert sc.choose_mode("cache", 95, 100) is None
    assert sc.choose_mode("recompute", 1, 100) == "recompute"
    import comfy.model_management
    free = comfy.model_management.get_free_memory(torch.device("cpu"))
    layers = pack.fatezero_attn.families.sd_layout.attention_layout(tiny_model.model.diffusion_model, (16, 16))
    per_frame = sc.estimate_bytes(layers, 1, 40, "per-frame", 0, 1024, 4)
    frames = int(2 * free / per_frame) + 1  # a video whose cache would need twice the free memory
    video = {"samples": torch.empty(frames, 4, 16, 16, device="meta")}  # its shape only: nothing is allocated
    with pytest.raises(ValueError) as err:
        node("FateZeroDDIMInversion").invert(tiny_model, encode(SRC), video, 50, "per-frame", 0, True, AUTHORS,
                                             "cache", 0.8)
    msg = str(err.value)
    assert msg.startswith("FateZero DDIM Inversion: 'store_mode' cache") and "recompute" in msg and "GB" in msg
