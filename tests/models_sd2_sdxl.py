"""Random-weight SD 2.x and SDXL checkpoints that ComfyUI's ``CheckpointLoaderSimple``
detects as such, built from ComfyUI's own classes (as ``models_sd1`` does for SD1.5).

- ``sd2_checkpoint(cache_dir, v_prediction)``: SD 2.x (context 1024, linear transformer
  projections, 64-channel heads) with its full OpenCLIP-H text encoder, saved in the SD2
  checkpoint format by ComfyUI's own ``process_clip_state_dict_for_saving``. ComfyUI tells
  the 768 v-prediction model from the 512 eps one by the spread of one norm bias of the last
  output block (``supported_models.SD20.model_type``): the v build gives it a spread.
- ``sdxl_checkpoint(cache_dir)``: SDXL (context 2048, the ``y`` vector of 2816, transformer
  depths 0, 0, 2, 2, 10, 10 as detection requires, narrow levels) with the full CLIP-L and
  CLIP-G text encoders.

UNets are SD's width (detection keys on it) with few levels and blocks; the text encoders
are full size, since ComfyUI builds them from fixed configs. Weights are seeded; nothing
here is a real model.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

import models_sd1

FORMAT = 1  # bump when a builder changes, so cached checkpoints are rebuilt

SD2_UNET = {
    "model_channels": 320, "channel_mult": [1, 1, 2, 2], "num_res_blocks": [2, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "transformer_depth_output": [1] * 9 + [0] * 3,
    "transformer_depth_middle": 1, "context_dim": 1024, "use_linear_in_transformer": True,
    "num_head_channels": 64, "num_heads": -1,
}
SDXL_UNET = {
    "model_channels": 320, "channel_mult": [1, 1, 1], "num_res_blocks": [2, 2, 2],
    "transformer_depth": [0, 0, 2, 2, 10, 10], "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
    "transformer_depth_middle": 1, "context_dim": 2048, "adm_in_channels": 2816, "use_linear_in_transformer": True,
    "num_head_channels": 64, "num_heads": -1, "num_classes": "sequential",
}
V_PRED_KEY = "output_blocks.11.1.transformer_blocks.0.norm1.bias"


def _unet(widths: dict, seed: int):
    import comfy.ldm.modules.diffusionmodules.openaimodel as openaimodel
    import comfy.ops
    unet = openaimodel.UNetModel(**models_sd1._unet_config(widths), operations=comfy.ops.disable_weight_init)
    models_sd1.init_random_(unet, seed)
    with torch.no_grad():
        unet.out[-1].weight.mul_(0.1)  # smooth enough to invert (models_sd1.tiny_model_patcher)
    return unet


def _text_encoder(config: Path, seed: int) -> dict:
    return models_sd1.text_encoder_fp16(json.loads(config.read_text()), seed)


def _vae(seed: int) -> dict:
    import comfy.ldm.models.autoencoder
    vae = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=models_sd1._VAE_DDCONFIG, embed_dim=4)
    models_sd1.init_random_(vae, seed)
    return models_sd1.half({f"first_stage_model.{k}": v for k, v in vae.state_dict().items()})


def _unet_fp16(widths: dict, seed: int, v_prediction: bool = False) -> dict:
    """The UNet's part of the checkpoint, in fp16 (``models_sd1.half``) once its float32 module,
    where the output scaling and the v-prediction marker are computed, is dropped."""
    unet = _unet(widths, seed)
    if v_prediction:  # what SD20.model_type reads to pick V_PREDICTION
        with torch.no_grad():
            unet.state_dict()[V_PRED_KEY].copy_(torch.randn(unet.state_dict()[V_PRED_KEY].shape,
                                                            generator=torch.Generator().manual_seed(seed)) * 0.2)
    return models_sd1.half({f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()})


def _sd2_state_dict(seed: int, v_prediction: bool) -> dict:
    import comfy.supported_models
    import comfy.text_encoders.sd2_clip as sd2_clip
    sd = _unet_fp16(SD2_UNET, seed, v_prediction)
    clip = _text_encoder(Path(sd2_clip.__file__).with_name("sd2_clip_config.json"), seed + 1)
    saving = comfy.supported_models.SD20(models_sd1._unet_config(SD2_UNET)).process_clip_state_dict_for_saving
    sd.update(saving({f"clip_h.transformer.{k}": v for k, v in clip.items()}))
    sd.update(_vae(seed + 2))
    return sd


def _sdxl_state_dict(seed: int) -> dict:
    import comfy.sd1_clip
    import comfy.supported_models
    sd = _unet_fp16(SDXL_UNET, seed)
    clip_dir = Path(comfy.sd1_clip.__file__).parent
    clip = {f"clip_l.transformer.{k}": v for k, v in _text_encoder(clip_dir / "sd1_clip_config.json", seed + 1).items()}
    clip.update({f"clip_g.transformer.{k}": v
                 for k, v in _text_encoder(clip_dir / "clip_config_bigg.json", seed + 3).items()})
    sd.update(comfy.supported_models.SDXL(models_sd1._unet_config(SDXL_UNET)).process_clip_state_dict_for_saving(clip))
    sd.update(_vae(seed + 2))
    return sd


def sd2_checkpoint(cache_dir: str | os.PathLike, v_prediction: bool = False, seed: int = 0) -> Path:
    """Write (once) and return a random SD 2.x checkpoint (768 v-prediction with ``v_prediction``)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    kind = "sd2v" if v_prediction else "sd2"
    tag = models_sd1._tag(FORMAT, kind, seed, SD2_UNET)
    return models_sd1._write_once(cache_dir / f"fatezero-test-{kind}-random-{tag}.safetensors",
                                  lambda: _sd2_state_dict(seed, v_prediction))


def sdxl_checkpoint(cache_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write (once) and return a random SDXL checkpoint."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tag = models_sd1._tag(FORMAT, "sdxl", seed, SDXL_UNET)
    return models_sd1._write_once(cache_dir / f"fatezero-test-sdxl-random-{tag}.safetensors",
                                  lambda: _sdxl_state_dict(seed))
