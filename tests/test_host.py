"""The foundation: the pack loads in the real ComfyUI, and the small SD1.5-shaped
checkpoint goes through ComfyUI's real loader and sampler nodes in a served graph."""
from __future__ import annotations

import numpy as np
import torch


def test_pack_loads_inside_the_real_host(pack, comfy_nodes):
    assert pack.NODE_CLASS_MAPPINGS, "the pack registered no nodes"
    for name, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert comfy_nodes.NODE_CLASS_MAPPINGS[name] is cls
        assert cls.CATEGORY.startswith("FateZero")
        for section in cls.INPUT_TYPES().values():
            for input_name, spec in section.items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{name}.{input_name} has no tooltip"


def test_server_lists_the_pack_nodes(server, pack):
    info = server.get("/object_info")
    for name in pack.NODE_CLASS_MAPPINGS:
        assert name in info, f"{name} missing from /object_info"
        assert info[name]["category"].startswith("FateZero")


def test_checkpoint_is_detected_as_sd15(checkpoint_dir, checkpoint_name):
    import comfy.sd
    model, clip, vae = comfy.sd.load_checkpoint_guess_config(str(checkpoint_dir / "checkpoints" / checkpoint_name))[:3]
    assert type(model.model.model_config).__name__ == "SD15"
    assert model.model.diffusion_model.model_channels == 320
    assert clip is not None and vae is not None


def test_tiny_unet_is_seeded(tiny_model):
    import models_sd1
    other = models_sd1.tiny_model_patcher(seed=0)
    a = dict(tiny_model.model.diffusion_model.named_parameters())
    b = dict(other.model.diffusion_model.named_parameters())
    assert all(torch.equal(a[k], b[k]) for k in a)
    third = models_sd1.tiny_model_patcher(seed=1)
    assert not torch.equal(third.model.diffusion_model.out[2].weight, a["out.2.weight"])


def sampling_graph(checkpoint_name: str, steps: int = 3, seed: int = 7) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint_name}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a silver jeep driving down a curvy road", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 2}},
        "5": {"class_type": "KSamplerAdvanced", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "add_noise": "enable", "noise_seed": seed, "steps": steps, "cfg": 7.5, "sampler_name": "ddim",
            "scheduler": "ddim_uniform", "start_at_step": 0, "end_at_step": 10000,
            "return_with_leftover_noise": "disable"}},
        "6": {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": f"host_test_{seed}"}},
    }


def _saved_latent(server, entry) -> torch.Tensor:
    import safetensors.torch
    item = entry["outputs"]["6"]["latents"][0]
    path = server.output_dir / item["subfolder"] / item["filename"]
    return safetensors.torch.load_file(str(path))["latent_tensor"]


def test_small_checkpoint_samples_through_real_nodes(server, checkpoint_name):
    first = _saved_latent(server, server.run(sampling_graph(checkpoint_name, seed=7)))
    assert first.shape == (2, 4, 16, 16)
    assert torch.isfinite(first).all() and first.std() > 0
    again = _saved_latent(server, server.run(sampling_graph(checkpoint_name, steps=4, seed=7)))
    other = _saved_latent(server, server.run(sampling_graph(checkpoint_name, steps=4, seed=8)))
    assert not torch.equal(again, other), "the seed did not reach the sampler"
    assert np.isfinite(other.numpy()).all()
