"""Small random-weight Stable Diffusion 1.x models, built from ComfyUI's own classes.

Two kinds:
- ``tiny_model_patcher()``: a narrow SD1-architecture UNet wrapped in ComfyUI's
  ``BaseModel``/``ModelPatcher``, for fast unit tests (no loader involved);
- ``sd15_checkpoint(cache_dir)``: a ``.safetensors`` checkpoint that ComfyUI's real
  ``CheckpointLoaderSimple`` detects as SD1.5 (model_channels 320, context_dim 768; a
  shallow UNet, the full SD1 CLIP-L text encoder and VAE), written once into a cache.

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

# A much narrower UNet of the same architecture for unit tests.
TINY_UNET = {
    "model_channels": 32,
    "channel_mult": [1, 2, 4],
    "num_res_blocks": [1, 1, 1],
    "transformer_depth": [1, 1, 1],
    "transformer_depth_output": [1, 1, 1, 1, 1, 1],
    "transformer_depth_middle": 1,
    "num_heads": 2,
}

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


def tiny_model_patcher(seed: int = 0, out_scale: float = 0.1):
    """A ``ModelPatcher`` around a narrow random SD1 UNet (real ComfyUI classes).

    ``out_scale`` shrinks the last convolution: a random UNet's noise prediction is
    rough in its input, and DDIM inversion is only meaningful (reversible to a few
    percent) for a smooth one, as a trained denoiser is."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    config = comfy.supported_models.SD15(_unet_config(TINY_UNET))
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


def _sd15_state_dict(seed: int) -> dict[str, torch.Tensor]:
    import comfy.clip_model
    import comfy.ldm.models.autoencoder
    import comfy.ldm.modules.diffusionmodules.openaimodel as openaimodel
    import comfy.ops

    ops = comfy.ops.disable_weight_init
    sd: dict[str, torch.Tensor] = {}

    unet = openaimodel.UNetModel(**_unet_config(SD15_SHALLOW_UNET), operations=ops)
    init_random_(unet, seed)
    with torch.no_grad():
        unet.out[-1].weight.mul_(0.1)  # smooth enough to invert, see tiny_model_patcher
    sd.update({f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()})
    del unet

    clip_cfg_path = Path(comfy.clip_model.__file__).with_name("sd1_clip_config.json")
    clip_cfg = json.loads(clip_cfg_path.read_text())
    clip = comfy.clip_model.CLIPTextModel(clip_cfg, dtype=torch.float32, device="cpu", operations=ops)
    init_random_(clip, seed + 1)
    sd.update({f"cond_stage_model.transformer.{k}": v for k, v in clip.state_dict().items()})
    sd["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
    del clip

    vae = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=_VAE_DDCONFIG, embed_dim=4)
    init_random_(vae, seed + 2)
    sd.update({f"first_stage_model.{k}": v for k, v in vae.state_dict().items()})
    return sd


def sd15_checkpoint(cache_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write (once) and return a random SD1.5-detected checkpoint in ``cache_dir``."""
    from safetensors.torch import save_file

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tag = hashlib.sha1(json.dumps([FORMAT, seed, SD15_SHALLOW_UNET]).encode()).hexdigest()[:8]
    path = cache_dir / f"fatezero-test-sd15-random-{tag}.safetensors"
    if not path.exists():
        sd = {k: v.contiguous().to(torch.float16) if v.is_floating_point() else v.contiguous()
              for k, v in _sd15_state_dict(seed).items()}
        tmp = path.with_suffix(".partial")
        save_file(sd, str(tmp), metadata={"fatezero_test_model": "random weights, not a real model"})
        os.replace(tmp, path)
    return path
