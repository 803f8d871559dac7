"""Wan as ComfyUI's Wan 2.2 A14B templates run it (issue 34): a LoRA on each expert
(LoraLoaderModelOnly, as the lightx2v 4-step LoRAs are loaded), ModelSamplingSD3 shift 5, CFG 1,
euler, 4 steps split 2 + 2 between the high- and low-noise experts.

- At CFG 1 ComfyUI runs the conditional row alone; the pack keeps it so: every edit call has one
  row (no unconditional row is asked for), and the source row walks beside it.
- Replace fractions 0: the two-expert edit equals the same graph without the pack, bit for bit.
- Fused: both samplers' steps are fused (the edit differs from plain in each half).
"""
from __future__ import annotations

import pytest
import torch

from test_wan import SRC, SWAP, fuse, invert, video, wan, wan_lora  # noqa: F401 (fixtures)
from test_wan22 import BOUNDARY

STEPS, SHIFT = 4, 5.0


@pytest.fixture(scope="module")
def experts(node, wan_files, wan_lora, tmp_path_factory):
    """(high, low) as the template loads them: two files, each with the LoRA at strength 1 and shift 5."""
    import folder_paths

    import models_wan
    folder = tmp_path_factory.mktemp("wan_few_step")
    other = models_wan.wan21_diffusion_model(folder, "wan21_tiny_high_noise.safetensors", seed=5)
    folder_paths.add_model_folder_path("diffusion_models", str(folder))

    def load(name):
        model = node("UNETLoader").load_unet(name, "default")[0]
        model = node("LoraLoaderModelOnly").load_lora_model_only(model, wan_lora, 1.0)[0]
        return node("ModelSamplingSD3").patch(model, SHIFT)[0]
    return load(other.name), load(wan_files["wan21"])


@pytest.fixture(scope="module")
def encode(node, wan_clip):
    return lambda text: node("CLIPTextEncode").encode(wan_clip, text)[0]


def edit(node, clip, encode, experts, inverted, fraction=0.8, pack=True):
    """The template's two samplers at CFG 1 (SplitSigmas at the inversion's expert_split_step)."""
    latent, store, sigmas, noise, split = inverted
    high_sigmas, low_sigmas = node("SplitSigmas").get_sigmas(sigmas, split)
    target = encode(SWAP)
    models = [fuse(node, m, store, clip, SWAP, fraction, fraction) if pack else m for m in experts]
    sampler = node("KSamplerSelect").get_sampler("euler")[0]
    guider = lambda m: node("CFGGuider").get_guider(m, target, encode(""), 1.0)[0]
    mid = node("SamplerCustomAdvanced").sample(noise, guider(models[0]), sampler, high_sigmas, latent)[0]
    (off,) = node("DisableNoise").get_noise()
    out = node("SamplerCustomAdvanced").sample(off, guider(models[1]), sampler, low_sigmas, mid)[0]
    return mid["samples"], out["samples"]


def test_four_steps_at_cfg_1_split_2_plus_2(node, pack, monkeypatch, wan_clip, encode, experts):
    high, low = experts
    inverted = invert(node, low, encode(SRC), video(), STEPS, model_high_noise=high, expert_boundary=BOUNDARY)
    sigmas, split = inverted[2], inverted[4]
    assert split == 2 and float(sigmas[1]) == pytest.approx(SHIFT * 0.75 / (1 + (SHIFT - 1) * 0.75))
    roles = []
    wrapper = pack.fatezero_attn.run.patch.FateZeroPatch.model_wrapper

    def spy(self, apply_model, args):
        roles.append((list(args["cond_or_uncond"]), args["input"].shape[0]))
        return wrapper(self, apply_model, args)

    monkeypatch.setattr(pack.fatezero_attn.run.patch.FateZeroPatch, "model_wrapper", spy)
    fused = edit(node, wan_clip, encode, experts, inverted)
    assert roles and all(r == ([0], 1) for r in roles)  # one conditional row a call, none unconditional
    zero = edit(node, wan_clip, encode, experts, inverted, fraction=0.0)
    plain = edit(node, wan_clip, encode, experts, inverted, pack=False)
    assert all(torch.equal(a, b) for a, b in zip(zero, plain))
    assert all(not torch.equal(a, b) for a, b in zip(fused, plain))  # each expert's half is fused
