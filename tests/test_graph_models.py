"""The random SD1 parts that composition tests wire next to the pack (ControlNet, LoRA,
inpainting checkpoint) go through ComfyUI's real loaders and nodes, fit the test
checkpoint, and change what the sampler produces."""
from __future__ import annotations

import logging
import re

import pytest
import torch

import models_sd1

STEPS = 2
CFG = 1.0  # ComfyUI then runs the UNet on the positive only: half the time on CPU
# Relative change of a sampled latent that counts as a change. Two runs of one graph agree
# exactly; the random UNet's prediction is small, so most of the latent is the shared noise.
CHANGED = 1e-3
PROMPT = "a silver jeep driving down a curvy road in the countryside"


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def files(graph_files):
    return graph_files


@pytest.fixture(scope="module")
def base(sd15):
    return sd15


@pytest.fixture(scope="module")
def conds(node, base):
    clip = base[1]
    return node("CLIPTextEncode").encode(clip, PROMPT)[0], node("CLIPTextEncode").encode(clip, "")[0]


@pytest.fixture(scope="module")
def latent():
    """Two 256x256 frames."""
    return {"samples": torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(3))}


def sample(node, model, positive, negative, latent, seed=5):
    out = node("KSamplerAdvanced").sample(model, "enable", seed, STEPS, CFG, "euler", "normal", positive, negative,
                                          latent, 0, 10000, "disable")[0]["samples"]
    assert torch.isfinite(out).all()
    return out


@pytest.fixture(scope="module")
def plain(node, base, conds, latent):
    return sample(node, base[0], *conds, latent)


def hint_image(kind: str) -> torch.Tensor:
    """A 256x256 RGB control image (ComfyUI IMAGE layout: B, H, W, C in [0, 1])."""
    y, x = torch.meshgrid(torch.linspace(0, 1, 256), torch.linspace(0, 1, 256), indexing="ij")
    if kind == "stripes":
        v = ((x * 8).floor() % 2).float()
        return torch.stack([v, v, v], -1)[None]
    return torch.stack([x, y, 1 - x], -1)[None]


def test_controlnet_is_detected_for_the_shallow_unet(files, conds, caplog):
    import comfy.controlnet
    import safetensors.torch
    with caplog.at_level(logging.WARNING):
        cnet = comfy.controlnet.load_controlnet(str(files["controlnet"]))
    assert "missing controlnet keys" not in caplog.text and "could not detect" not in caplog.text
    assert type(cnet) is comfy.controlnet.ControlNet
    net = cnet.control_model
    assert net.model_channels == 320 and list(net.channel_mult) == [1, 1, 2] and net.num_res_blocks == [1, 1, 1]
    assert len(net.input_blocks) == 6 and len(net.zero_convs) == 6
    assert net.input_hint_block[0].in_channels == 3
    assert net.middle_block[1].transformer_blocks[0].attn2.to_k.in_features == 768
    # the file's weights are the ones in use, and the output convolutions are not zero
    saved = safetensors.torch.load_file(str(files["controlnet"]))
    for k in ("zero_convs.0.0.weight", "middle_block_out.0.weight", "input_hint_block.14.weight"):
        w = dict(net.named_parameters())[k]
        assert torch.equal(w.float(), saved[f"control_model.{k}"].float()) and w.abs().max() > 0
    # the residuals depend on the hint image, not only on the latent
    x, t = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(1)), torch.tensor([500.0, 500.0])
    context = conds[0][0][0].expand(2, -1, -1)
    with torch.no_grad():
        a, b = (net(x, hint_image(kind).movedim(-1, 1).expand(2, -1, -1, -1), t, context)["output"]
                for kind in ("stripes", "ramp"))
    assert min(rel_diff(ra, rb) for ra, rb in zip(a, b)) > 0.01


def test_controlnet_changes_sampling(node, base, conds, latent, plain, files, caplog):
    (cnet,) = node("ControlNetLoader").load_controlnet(files["controlnet"].name)
    positive, negative = node("ControlNetApplyAdvanced").apply_controlnet(*conds, cnet, hint_image("stripes"),
                                                                          1.0, 0.0, 1.0)
    with caplog.at_level(logging.WARNING):
        controlled = sample(node, base[0], positive, negative, latent)
    assert "could not be applied" not in caplog.text
    print(f"ControlNet vs none: {rel_diff(controlled, plain):.4f}")
    assert rel_diff(controlled, plain) > CHANGED


def test_lora_loads_without_leftover_keys_and_changes_attention(node, base, conds, latent, plain, files, caplog):
    import comfy.lora
    import comfy.sd
    import comfy.utils
    model, clip, _ = base
    with caplog.at_level(logging.WARNING):
        model_l, clip_l = node("LoraLoader").load_lora(model, clip, files["loras"].name, 1.0, 1.0)
    assert "lora key not loaded" not in caplog.text
    # every attention projection of every UNet transformer block is patched
    attn = [k for k in model.model.state_dict()
            if re.search(r"transformer_blocks\.\d+\.attn[12]\.to_(q|k|v|out\.0)\.weight$", k)]
    assert len(attn) == 10 * 8  # 3 down, 1 middle, 6 up transformers; q, k, v, out of attn1 and attn2
    assert set(attn) <= set(model_l.patches)
    assert not model.patches  # the loader patched a clone
    clip_patched = [k for k in clip_l.patcher.patches if ".self_attn." in k]
    assert len(clip_patched) == 12 * 4
    # kohya names (diffusers module paths) land on the right ldm weights, linear and 1x1 conv
    lora = comfy.utils.load_torch_file(str(files["loras"]), safe_load=True)
    weights = model.model.state_dict()
    for name, key in (("lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k",
                       "diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight"),
                      ("lora_unet_up_blocks_1_attentions_0_proj_in", "diffusion_model.output_blocks.2.1.proj_in.weight")):
        w = weights[key].float()
        up, down = lora[f"{name}.lora_up.weight"].float(), lora[f"{name}.lora_down.weight"].float()
        scale = float(lora[f"{name}.alpha"]) / down.shape[0]
        expected = w + scale * (up.flatten(1) @ down.flatten(1)).reshape(w.shape)
        patched = comfy.lora.calculate_weight(model_l.patches[key], w.clone(), key)
        torch.testing.assert_close(patched, expected, rtol=1e-4, atol=1e-5)

    positive = node("CLIPTextEncode").encode(clip_l, PROMPT)[0]
    assert rel_diff(positive[0][0], conds[0][0][0]) > 0.01
    with caplog.at_level(logging.WARNING):
        unet_only = sample(node, model_l, *conds, latent)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or "Calculate Weight Failed" in r.message]
    print(f"LoRA (UNet) vs none: {rel_diff(unet_only, plain):.4f}")
    assert rel_diff(unet_only, plain) > CHANGED

    # the warning looked for above is the one ComfyUI gives for a key it cannot place
    lora["lora_unet_no_such_block.alpha"] = torch.tensor(4.0)
    with caplog.at_level(logging.WARNING):
        comfy.sd.load_lora_for_models(model, clip, lora, 1.0, 1.0)
    assert "lora key not loaded: lora_unet_no_such_block.alpha" in caplog.text


def test_inpaint_checkpoint_is_detected_and_samples(node, files):
    import comfy.model_base
    model, clip, vae = node("CheckpointLoaderSimple").load_checkpoint(files["checkpoints"].name)
    assert type(model.model.model_config).__name__ == "SD15"
    assert model.model.model_type == comfy.model_base.ModelType.EPS
    assert model.model.diffusion_model.in_channels == 9
    assert model.model.concat_keys == ("mask", "masked_image")

    encode = node("CLIPTextEncode").encode
    # two 128x128 frames: the VAE encodes each twice (masked and whole), the slow part on CPU
    pixels = torch.rand(2, 128, 128, 3, generator=torch.Generator().manual_seed(6))
    mask = torch.zeros(2, 128, 128)
    mask[:, 32:96, 48:112] = 1.0
    positive, negative, inpaint_latent = node("InpaintModelConditioning").encode(
        encode(clip, PROMPT)[0], encode(clip, "")[0], pixels, vae, mask, True)
    assert inpaint_latent["samples"].shape == (2, 4, 16, 16)
    assert positive[0][1]["concat_latent_image"].shape == (2, 4, 16, 16)
    out = sample(node, model, positive, negative, inpaint_latent)
    assert out.shape == (2, 4, 16, 16)
