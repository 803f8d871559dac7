"""The noised-source mode of FateZero Attention Fusion on Wan (issue 34, item 3).

The source row at each fused step is the store's clean latent brought to that call's sigma with
the noise the sampler starts from (``model_sampling.noise_scaling``), not the inverted
trajectory, so the sampler may run its own steps, scheduler and sampler. On the tiny random Wan
2.1 of ``test_wan``:
- replace fractions 0: plain sampling from the same noise, bit for bit;
- every source-row call gets exactly the noised clean latent at the call's own sigma, on
  another step count than the store's, and with a sampler that adds noise each step;
- the same prompt fully fused from fresh noise lands closer to the clip than plain sampling
  from that noise (the source's attention carries its structure);
- what it needs is asked for by name.
"""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from test_wan import SRC, SWAP, encode, fuse, invert, rel, video, wan  # noqa: F401 (fixtures)

STEPS = 4
SEED = 11


def noised_fuse(node, model, store, clip, target, frac=0.8, noise=None, blocks="auto", mode="noised source"):
    noise = noise if noise is not None else node("RandomNoise").get_noise(SEED)[0]
    return node("FateZeroAttentionFusion").patch(model, store, clip, SRC, target, frac, frac, "auto", "", "", None,
                                                  blocks, mode, noise)[0]


def sample_from_noise(node, model, positive, negative, x, steps, sampler="euler", cfg=1.0):
    """SamplerCustomAdvanced from RandomNoise on the source latent, on the model's own schedule."""
    noise = node("RandomNoise").get_noise(SEED)[0]
    guider = node("CFGGuider").get_guider(model, positive, negative, cfg)[0]
    sigmas = node("BasicScheduler").get_sigmas(model, "simple", steps, 1.0)[0]
    chosen = node("KSamplerSelect").get_sampler(sampler)[0]
    return node("SamplerCustomAdvanced").sample(noise, guider, chosen, sigmas, x)[0]["samples"]


@pytest.fixture(scope="module")
def store(node, wan, encode):
    return invert(node, wan, encode(SRC), video(), STEPS)[1]


def test_replace_fractions_zero_is_plain_sampling_from_the_noise_bit_for_bit(node, wan, wan_clip, encode, store):
    target, negative = encode(SWAP), encode("")
    fused = noised_fuse(node, wan, store, wan_clip, SWAP, 0.0)
    assert torch.equal(sample_from_noise(node, fused, target, negative, video(), 8, cfg=5.0),
                       sample_from_noise(node, wan, target, negative, video(), 8, cfg=5.0))


@pytest.mark.parametrize("steps,sampler", [(STEPS, "euler"), (7, "euler"), (6, "euler_ancestral")])
def test_the_source_row_is_the_clean_latent_noised_to_each_calls_sigma(node, pack, monkeypatch, wan, wan_clip, encode,
                                                                       store, steps, sampler):
    patch = pack.fatezero_attn.run.patch.FateZeroPatch
    original, calls = patch.call_model, []

    def spy(self, apply_model, args, x, t, c, chunk):
        calls.append((c["transformer_options"]["fatezero"].roles, x.clone(), t.clone()))
        return original(self, apply_model, args, x, t, c, chunk)
    monkeypatch.setattr(patch, "call_model", spy)  # before the fusion node binds it for the source row
    fused = noised_fuse(node, wan, store, wan_clip, SWAP, 1.0, blocks="all")
    sample_from_noise(node, fused, encode(SWAP), encode(""), video(), steps, sampler)
    noise = node("RandomNoise").get_noise(SEED)[0].generate_noise({"samples": torch.zeros_like(store.clean_latent)})
    ms = wan.get_model_object("model_sampling")
    edits = [t for roles, _, t in calls if roles != ["source"]]
    sources = [(x, t) for roles, x, t in calls if roles == ["source"]]
    assert len(sources) == len(edits) == steps  # every step fused (fractions 1), one source call each
    for (x, t), edit_t in zip(sources, edits):
        assert torch.equal(t, edit_t)  # the call's own sigma, not the store's
        assert torch.equal(x, ms.noise_scaling(t[:1], noise, store.clean_latent))


def test_same_prompt_fully_fused_from_fresh_noise_keeps_the_clips_structure(node, wan, wan_clip, encode, store):
    source, x = encode(SRC), video()
    plain = sample_from_noise(node, wan, source, source, x, 8)
    fused = sample_from_noise(node, noised_fuse(node, wan, store, wan_clip, SRC, 1.0, blocks="all"), source, source,
                              x, 8)
    assert rel(fused, x["samples"]) < rel(plain, x["samples"])


def test_what_the_mode_needs_is_asked_for_by_name(node, wan, wan_clip, store):
    with pytest.raises(ValueError, match="connect that NOISE"):
        node("FateZeroAttentionFusion").patch(wan, store, wan_clip, SRC, SWAP, 0.8, 0.8, "auto", "", "", None, "auto",
                                              "noised source", None)
    old = type(store)(store.info, store.sigmas, store.unet_inputs, store.source_context, store.cross_maps,
                      store.source_conds)  # as loaded from a file written before the mode
    with pytest.raises(ValueError, match="older version of the pack"):
        noised_fuse(node, wan, old, wan_clip, SWAP)
    sd_store = copy.copy(store)
    sd_store.info = dataclasses.replace(store.info, model_family="SD1")
    with pytest.raises(ValueError, match="SD1 store: SD edits from its inverted trajectory"):
        noised_fuse(node, wan, sd_store, wan_clip, SWAP)
