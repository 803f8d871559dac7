"""Wan 2.2 (issue 24): the A14B model's two experts with one inversion and one store, and the 5B model.

- Two experts: the inversion walks the low-noise expert below the boundary and the high-noise one
  above it; the usual two-sampler graph (SplitSigmas at the inversion's expert_split_step, one
  fused MODEL per expert) edits from that one store. With both experts the same file the edit
  equals, bit for bit, the same graph on one model; with two different experts it differs; a
  fused MODEL asked for a step on the other expert's side stops with a message, and a MODEL that
  is neither expert is refused.
- 5B (48-channel latent, WAN22_T2V): replace fractions 0 equal plain sampling bit for bit, and the
  same prompt with every fraction 1 reproduces the video better than sampling back.
"""
from __future__ import annotations

import pytest
import torch

import models_wan
from test_wan import CFG, SRC, SWAP, fuse, invert, rel, sample, video

BOUNDARY = 0.875  # Wan 2.2 A14B T2V's released switch point
STEPS = 10


@pytest.fixture(scope="module")
def experts(node, wan_files, tmp_path_factory):
    """(high, low): the tests' Wan 2.1 file loaded twice (the same weights), and a second file
    with other weights as the other expert."""
    import folder_paths
    folder = tmp_path_factory.mktemp("wan_experts")
    other = models_wan.wan21_diffusion_model(folder, "wan21_tiny_other_expert.safetensors", seed=5)
    folder_paths.add_model_folder_path("diffusion_models", str(folder))
    load = lambda name: node("UNETLoader").load_unet(name, "default")[0]
    return {"same": (load(wan_files["wan21"]), load(wan_files["wan21"])),
            "different": (load(other.name), load(wan_files["wan21"]))}


@pytest.fixture(scope="module")
def encode(node, wan_clip):
    return lambda text: node("CLIPTextEncode").encode(wan_clip, text)[0]


def two_expert_edit(node, clip, encode, high, low, inverted, fused=True):
    """The two-sampler graph: SplitSigmas at the inversion's split step, the high-noise expert's
    fused MODEL samples from the inverted noise, the low-noise one finishes without noise."""
    latent, store, sigmas, noise, split = inverted
    high_sigmas, low_sigmas = node("SplitSigmas").get_sigmas(sigmas, split)
    target, negative = encode(SWAP), encode("")
    frac = 0.8 if fused else 0.0
    models = [fuse(node, m, store, clip, SWAP, frac, frac) for m in (high, low)]
    sampler = node("KSamplerSelect").get_sampler("euler")[0]
    guider = lambda m: node("CFGGuider").get_guider(m, target, negative, CFG)[0]
    mid = node("SamplerCustomAdvanced").sample(noise, guider(models[0]), sampler, high_sigmas, latent)[0]
    (off,) = node("DisableNoise").get_noise()
    return node("SamplerCustomAdvanced").sample(off, guider(models[1]), sampler, low_sigmas, mid)[0]["samples"]


def test_two_experts_one_inversion(node, wan_clip, encode, experts):
    high, low = experts["same"]
    source = encode(SRC)
    both = invert(node, low, source, video(), STEPS, model_high_noise=high, expert_boundary=BOUNDARY)
    one = invert(node, low, source, video(), STEPS, model_high_noise=low, expert_boundary=BOUNDARY)
    latent, store, sigmas, noise, split = both
    assert split == int((sigmas[:-1] >= BOUNDARY).sum()) and 0 < split < STEPS
    assert store.info.expert_boundary == BOUNDARY and store.info.high_noise_model_id
    assert torch.equal(store.unet_inputs, one[1].unet_inputs) and torch.equal(latent["samples"], one[0]["samples"])
    # the same file as both experts: the two-expert graph is the graph on one model, bit for bit
    edit = two_expert_edit(node, wan_clip, encode, high, low, both)
    assert torch.equal(edit, two_expert_edit(node, wan_clip, encode, low, low, one))
    # and fusion acts in both samplers
    assert not torch.equal(edit, two_expert_edit(node, wan_clip, encode, high, low, both, fused=False))


def test_different_experts_change_the_edit_and_a_swap_is_refused(node, wan_clip, encode, experts):
    high, low = experts["different"]
    source = encode(SRC)
    both = invert(node, low, source, video(), STEPS, model_high_noise=high, expert_boundary=BOUNDARY)
    alone = invert(node, low, source, video(), STEPS, model_high_noise=low, expert_boundary=BOUNDARY)
    split = both[4]
    # the steps below the boundary ran on the same expert, the high-noise steps on the other one
    assert torch.equal(both[1].unet_inputs[:STEPS - split], alone[1].unet_inputs[:STEPS - split])
    assert not torch.equal(both[1].unet_inputs[STEPS - split:], alone[1].unet_inputs[STEPS - split:])
    edit = two_expert_edit(node, wan_clip, encode, high, low, both)
    assert not torch.equal(edit, two_expert_edit(node, wan_clip, encode, low, low, alone))
    # swapped: the low-noise expert's fused MODEL in the high-noise sampler
    with pytest.raises(ValueError, match="high-noise expert"):
        two_expert_edit(node, wan_clip, encode, low, high, both)


def test_the_high_noise_expert_is_prepared_as_the_sampled_model_is(node, encode, experts, monkeypatch):
    """ComfyUI's sampler prepares (``pre_run``) the MODEL it samples and only loads the others; the
    inversion calls the high-noise expert itself, so it prepares that one too (ComfyUI 0.38 reads
    ``current_patcher`` to stream a dynamic-VRAM model's blocks ahead), and ComfyUI cleans it up."""
    high, low = experts["different"]
    seen = []
    apply_model = type(high.model).apply_model

    def spy(self, *args, **kwargs):
        if self is high.model:
            seen.append(self.current_patcher)
        return apply_model(self, *args, **kwargs)
    monkeypatch.setattr(type(high.model), "apply_model", spy)
    invert(node, low, encode(SRC), video(), 3, model_high_noise=high, expert_boundary=BOUNDARY)
    assert seen and all(p is not None and p.model is high.model for p in seen)
    assert high.model.current_patcher is None


def test_a_model_that_is_neither_expert_is_refused(node, wan_clip, encode, experts):
    high, low = experts["different"]
    store = invert(node, low, encode(SRC), video(), STEPS, model_high_noise=high, expert_boundary=BOUNDARY)[1]
    again = node("UNETLoader").load_unet("wan21_tiny_other_expert.safetensors", "default")[0]
    fuse(node, again, store, wan_clip, SWAP)  # the high-noise expert's file, loaded again: accepted
    shifted = node("ModelSamplingSD3").patch(low, 3.0)[0]  # the low-noise expert with another shift
    with pytest.raises(ValueError, match="neither of the attention store's experts"):
        fuse(node, shifted, store, wan_clip, SWAP)


@pytest.fixture(scope="module")
def wan22_5b(node, wan_files):
    return node("UNETLoader").load_unet(wan_files["wan22_5b"], "default")[0]


def video48(seed: int = 12) -> dict:
    x = video(seed)["samples"]
    return {"samples": torch.cat([x, x.flip(1), x.roll(1, -1)], 1)}  # 48 smooth channels


def test_5b_model_is_taken_and_its_invariants_hold(node, pack, wan22_5b, wan_clip, encode):
    assert type(wan22_5b.model.model_config).__name__ == "WAN22_T2V"
    assert pack.fatezero_attn.families.family_of(wan22_5b).name == "WAN22-5B"
    source, target, negative = encode(SRC), encode(SWAP), encode("")
    x = video48()
    inv = invert(node, wan22_5b, source, x, STEPS)
    assert inv[1].unet_inputs.shape[2] == 48
    fused0 = fuse(node, wan22_5b, inv[1], wan_clip, SWAP, 0.0, 0.0)
    assert torch.equal(sample(node, fused0, target, negative, inv), sample(node, wan22_5b, target, negative, inv))
    recon = sample(node, wan22_5b, source, source, inv, cfg=1.0)
    full = sample(node, fuse(node, wan22_5b, inv[1], wan_clip, SRC, 1.0, 1.0, fused_blocks="all"), source, source,
                  inv, cfg=1.0)
    assert rel(full, x["samples"]) < 0.9 * rel(recon, x["samples"])
