"""Small random-weight Stable Diffusion 1.x models, built from ComfyUI's own classes.

Two kinds:
- ``tiny_model_patcher()``: a narrow SD1-architecture UNet wrapped in ComfyUI's
  ``BaseModel``/``ModelPatcher``, for fast unit tests (no loader involved);
- ``sd15_checkpoint(cache_dir)``: a ``.safetensors`` checkpoint that ComfyUI's real
  ``CheckpointLoaderSimple`` detects as SD1.5 (model_channels 320, context_dim 768; a
  shallow UNet, the full SD1 CLIP-L text encoder and VAE), written once into a cache.

For graphs that compose the pack with other SD1 parts, files that fit that checkpoint:
- ``sd15_controlnet(cache_dir)``: a ControlNet for the shallow UNet (``ControlNetLoader``);
- ``sd15_lora(cache_dir)``: a kohya-format LoRA for its UNet and CLIP (``LoraLoader``);
- ``sd15_inpaint_checkpoint(cache_dir)``: the checkpoint with a 9-channel (inpainting) UNet.

Weights are seeded, so every build is bit-identical. None of this is a real model:
the outputs only show that the graph works.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import torch

# The UNet of the end-to-end checkpoint: SD1.5's widths (what detection keys on),
# three levels instead of four and one ResNet per level, so a 256x256 frame has
# attention at 32x32, 16x16 and 8x8 latent resolution (the 8x8 level plays the part
# of SD's 16x16 blend-mask level at 512x512).
SD15_SHALLOW_UNET = {
    "model_channels": 320,
    "channel_mult": [1, 1, 2],
    "num_res_blocks": [1, 1, 1],
    "transformer_depth": [1, 1, 1],
    "transformer_depth_output": [1, 1, 1, 1, 1, 1],
    "transformer_depth_middle": 1,
}

# A much narrower UNet of the same architecture for unit tests (and a two-level variant).
TINY_UNET = {
    "model_channels": 32,
    "channel_mult": [1, 2, 4],
    "num_res_blocks": [1, 1, 1],
    "transformer_depth": [1, 1, 1],
    "transformer_depth_output": [1, 1, 1, 1, 1, 1],
    "transformer_depth_middle": 1,
    "num_heads": 2,
}

TWO_LEVEL_UNET = {**TINY_UNET, "channel_mult": [1, 2], "num_res_blocks": [1, 1], "transformer_depth": [1, 1],
                  "transformer_depth_output": [1, 1, 1, 1]}

_COMMON_UNET = {
    "use_checkpoint": False,
    "image_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "dims": 2,
    "context_dim": 768,
    "use_linear_in_transformer": False,
    "adm_in_channels": None,
    "use_temporal_attention": False,
    "use_temporal_resblock": False,
    "use_spatial_transformer": True,
    "num_head_channels": -1,
    "num_heads": 8,
    "legacy": False,
}

_VAE_DDCONFIG = {
    "double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3,
    "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0,
}

FORMAT = 4  # bump when anything above changes, so cached checkpoints are rebuilt
GRAPH_FORMAT = 1  # the same for the ControlNet, LoRA and inpainting builders below

# ControlNet's zero-initialised output convolutions get this fraction of a random init
# instead, so that a random ControlNet does change the UNet's output.
CONTROLNET_OUT_SCALE = 0.1
# A LoRA's update B @ A (times alpha / rank) against a layer's own weight, per entry.
LORA_SCALE = 0.3


@torch.no_grad()
def init_random_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Seeded init with unit-variance activations (1/sqrt(fan_in) weights, zero bias,
    identity norms), in a fixed parameter order so the result never depends on RNG state."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
        is_norm = any(t in name for t in ("norm", "ln_", "layer_norm")) or p.ndim == 1 and name.endswith("weight")
        if name.endswith("bias"):
            p.zero_()
        elif is_norm and p.ndim == 1:
            p.fill_(1.0)
        elif "embedding" in name:
            p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
        else:
            fan_in = p[0].numel() if p.ndim > 1 else p.numel()
            p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
    return module


def _unet_config(widths: dict) -> dict:
    cfg = dict(_COMMON_UNET)
    cfg.update(widths)
    return cfg


def tiny_model_patcher(seed: int = 0, out_scale: float = 0.1, widths: dict | None = None):
    """A ``ModelPatcher`` around a narrow random SD1 UNet (real ComfyUI classes).

    ``out_scale`` shrinks the last convolution: a random UNet's noise prediction is
    rough in its input, and DDIM inversion is only meaningful (reversible to a few
    percent) for a smooth one, as a trained denoiser is."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    config = comfy.supported_models.SD15(_unet_config(widths or TINY_UNET))
    model = config.get_model({})
    init_random_(model.diffusion_model, seed)
    model.diffusion_model.to(torch.float32)
    with torch.no_grad():
        model.diffusion_model.out[-1].weight.mul_(out_scale)
    return comfy.model_patcher.ModelPatcher(
        model,
        load_device=comfy.model_management.get_torch_device(),
        offload_device=comfy.model_management.unet_offload_device(),
    )


def half(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``sd``'s floats as fp16, the conversion ``_write_once`` makes before saving (so the same
    bytes). A builder converts each part as soon as it is built and drops its float32 module:
    its peak is one part in float32, not the whole checkpoint in float32 plus its fp16 copy."""
    return {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in sd.items()}


def text_encoder_fp16(config: dict, seed: int) -> dict[str, torch.Tensor]:
    """The state dict of a random ``CLIPTextModel`` (``init_random_``), built in fp16, the dtype it
    is saved in: ``init_random_`` draws each weight in float32 and ``copy_`` rounds it as the
    conversion at saving does, and nothing is computed on the weights after, so the bytes are
    those of a float32 build converted; the float32 model (2.8 GB for CLIP-G) never exists."""
    import comfy.clip_model
    import comfy.ops
    model = comfy.clip_model.CLIPTextModel(config, dtype=torch.float16, device="cpu",
                                           operations=comfy.ops.disable_weight_init)
    init_random_(model, seed)
    return model.state_dict()


def _sd15_state_dict(seed: int, in_channels: int = 4) -> dict[str, torch.Tensor]:
    import comfy.clip_model
    import comfy.ldm.models.autoencoder
    import comfy.ldm.modules.diffusionmodules.openaimodel as openaimodel
    import comfy.ops

    ops = comfy.ops.disable_weight_init
    sd: dict[str, torch.Tensor] = {}

    unet_cfg = _unet_config(SD15_SHALLOW_UNET)
    unet_cfg["in_channels"] = in_channels  # 9 for inpainting: latent, mask, masked image
    unet = openaimodel.UNetModel(**unet_cfg, operations=ops)
    init_random_(unet, seed)
    with torch.no_grad():
        unet.out[-1].weight.mul_(0.1)  # smooth enough to invert, see tiny_model_patcher
    sd.update(half({f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()}))
    del unet

    clip_cfg = json.loads(Path(comfy.clip_model.__file__).with_name("sd1_clip_config.json").read_text())
    sd.update({f"cond_stage_model.transformer.{k}": v for k, v in text_encoder_fp16(clip_cfg, seed + 1).items()})
    sd["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)

    vae = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=_VAE_DDCONFIG, embed_dim=4)
    init_random_(vae, seed + 2)
    sd.update(half({f"first_stage_model.{k}": v for k, v in vae.state_dict().items()}))
    return sd


def _write_once(path: Path, build) -> Path:
    """Save ``build()`` (a state dict; floats as fp16) to ``path`` unless it exists,
    through a temporary file so that a reader never sees half a file."""
    from safetensors.torch import save_file

    if not path.exists():
        sd = {k: v.contiguous() for k, v in half(build()).items()}  # parts already fp16 are not copied
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.partial")
        save_file(sd, str(tmp), metadata={"fatezero_test_model": "random weights, not a real model"})
        os.replace(tmp, path)
    return path


def _tag(*parts) -> str:
    return hashlib.sha1(json.dumps(list(parts)).encode()).hexdigest()[:8]


def sd15_checkpoint(cache_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write (once) and return a random SD1.5-detected checkpoint in ``cache_dir``."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"fatezero-test-sd15-random-{_tag(FORMAT, seed, SD15_SHALLOW_UNET)}.safetensors"
    return _write_once(path, lambda: _sd15_state_dict(seed))


def sd15_inpaint_checkpoint(cache_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write (once) and return the SD1.5 checkpoint with a 9-channel UNet, which ComfyUI
    detects as an SD1.5 inpainting model (its sampler concatenates mask and masked image)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tag = _tag(FORMAT, GRAPH_FORMAT, "inpaint", seed, SD15_SHALLOW_UNET)
    path = cache_dir / f"fatezero-test-sd15-inpaint-random-{tag}.safetensors"
    return _write_once(path, lambda: _sd15_state_dict(seed, in_channels=9))


def _sd15_controlnet_state_dict(seed: int) -> dict[str, torch.Tensor]:
    import comfy.cldm.cldm
    import comfy.ops

    cfg = _unet_config(SD15_SHALLOW_UNET)
    cfg.pop("out_channels")
    net = comfy.cldm.cldm.ControlNet(hint_channels=3, operations=comfy.ops.disable_weight_init, **cfg)
    init_random_(net, seed)
    with torch.no_grad():
        # each hint conv but the last feeds a SiLU, which halves a small signal: a gain of 2
        # keeps the hint's features at unit scale, so that the hint image matters
        for conv in list(net.input_hint_block)[:-1:2]:
            conv.weight.mul_(2.0)
        outs = [*(zc[0] for zc in net.zero_convs), net.middle_block_out[0], net.input_hint_block[-1]]
        for conv in outs:
            conv.weight.mul_(CONTROLNET_OUT_SCALE)
    # the key layout of the original SD1 ControlNet checkpoints: "control_model.<ldm name>"
    return {f"control_model.{k}": v for k, v in net.state_dict().items()}


def sd15_controlnet(cache_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write (once) and return a random ControlNet (RGB hint) for the checkpoint's shallow
    UNet, built with ComfyUI's ``ControlNet`` class. Its output convolutions are small
    random rather than zero, so it changes what the UNet predicts."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tag = _tag(GRAPH_FORMAT, "controlnet", seed, CONTROLNET_OUT_SCALE, SD15_SHALLOW_UNET)
    path = cache_dir / f"fatezero-test-sd15-controlnet-random-{tag}.safetensors"
    return _write_once(path, lambda: _sd15_controlnet_state_dict(seed + 3))


# LoRA targets in every transformer block of the UNet and every CLIP layer.
_LORA_UNET_TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                      "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2")
_LORA_CLIP_TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                      "mlp.fc1", "mlp.fc2")


def _lora_pair(gen: torch.Generator, shape: torch.Size, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (up, down) whose product has about LORA_SCALE times the entries of a
    1/sqrt(fan_in) weight of ``shape`` (linear, or convolution kernel)."""
    out_dim, in_dim, kernel = shape[0], shape[1], tuple(shape[2:])
    down = torch.randn((rank, in_dim, *kernel), generator=gen) / math.sqrt(in_dim * math.prod(kernel))
    up = torch.randn((out_dim, rank, *(1,) * len(kernel)), generator=gen) * (LORA_SCALE / math.sqrt(rank))
    return up, down


def _sd15_lora_state_dict(seed: int, rank: int) -> dict[str, torch.Tensor]:
    import comfy.clip_model
    import comfy.ldm.modules.diffusionmodules.openaimodel as openaimodel
    import comfy.ops
    import comfy.utils

    ops = comfy.ops.disable_weight_init
    unet_cfg = _unet_config(SD15_SHALLOW_UNET)
    unet_shapes = {k: v.shape for k, v in openaimodel.UNetModel(**unet_cfg, operations=ops, device="meta")
                   .state_dict().items()}
    clip_cfg = json.loads(Path(comfy.clip_model.__file__).with_name("sd1_clip_config.json").read_text())
    clip = comfy.clip_model.CLIPTextModel(clip_cfg, dtype=torch.float32, device="meta", operations=ops)
    clip_shapes = {k: v.shape for k, v in clip.state_dict().items()}

    # kohya (sd-scripts) names: "lora_unet_" + the diffusers module path, dots as underscores;
    # ComfyUI's own table gives the diffusers path of each ldm weight.
    targets = []  # (lora name, weight shape)
    for diffusers_key, ldm_key in sorted(comfy.utils.unet_to_diffusers(unet_cfg).items()):
        module = diffusers_key[:-len(".weight")]
        if diffusers_key.endswith(".weight") and (module.endswith(_LORA_UNET_TARGETS)
                                                 or module.endswith((".proj_in", ".proj_out"))):
            targets.append(("lora_unet_" + module.replace(".", "_"), unet_shapes[ldm_key]))
    for layer in range(clip_cfg["num_hidden_layers"]):
        for t in _LORA_CLIP_TARGETS:
            shape = clip_shapes[f"text_model.encoder.layers.{layer}.{t}.weight"]
            targets.append((f"lora_te_text_model_encoder_layers_{layer}_{t.replace('.', '_')}", shape))

    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for name, shape in targets:
        sd[f"{name}.lora_up.weight"], sd[f"{name}.lora_down.weight"] = _lora_pair(gen, shape, rank)
        sd[f"{name}.alpha"] = torch.tensor(float(rank))
    return sd


def sd15_lora(cache_dir: str | os.PathLike, seed: int = 0, rank: int = 4) -> Path:
    """Write (once) and return a random rank-``rank`` LoRA for the checkpoint, in kohya's
    key format: the attention, feed-forward and projection layers of every UNet
    transformer block, and the attention and MLP layers of every CLIP layer."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tag = _tag(GRAPH_FORMAT, "lora", seed, rank, LORA_SCALE, SD15_SHALLOW_UNET)
    path = cache_dir / f"fatezero-test-sd15-lora-random-{tag}.safetensors"
    return _write_once(path, lambda: _sd15_lora_state_dict(seed + 4, rank))
