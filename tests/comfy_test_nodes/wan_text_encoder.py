"""Test-only ComfyUI nodes: the tests' tiny umT5 text encoder and Wan 2.2 VAE, for the Wan workflows
on the test server.

ComfyUI's ``CLIPLoader`` (type wan) builds the fixed umT5-XXL config (5.7 B parameters) from any
file it detects as umT5, and takes a smaller file for T5-base, so the tests' tiny encoder
(``tests/models_wan.py``: ComfyUI's umT5 classes with a small config and a SentencePiece model
trained from the test prompts) cannot come through it. The Wan workflow tests put this node in
``CLIPLoader``'s place, with its inputs and its CLIP output. Likewise ``VAELoader`` builds the
Wan 2.2 VAE at its full widths (705 M parameters) whatever the file: ``FateZeroTestWan22VAELoader``
gives ``models_wan.wan22_vae``, ComfyUI's Wan 2.2 VAE class at a small width.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for models_wan

import models_wan  # noqa: E402


class FateZeroTestWanCLIPLoader:
    CATEGORY = "_for_testing"  # ComfyUI's own folder for test nodes, not the pack's library folder
    FUNCTION = "load_clip"
    RETURN_TYPES = ("CLIP",)
    _clip = None  # one encoder per server: its weights and tokenizer are seeded, every build is the same

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip_name": ("STRING", {"default": ""}), "type": ("STRING", {"default": "wan"})},
                "optional": {"device": ("STRING", {"default": "default"})}}

    def load_clip(self, clip_name, type, device="default"):
        if FateZeroTestWanCLIPLoader._clip is None:
            FateZeroTestWanCLIPLoader._clip = models_wan.wan_text_encoder(models_wan.train_spiece())
        return (FateZeroTestWanCLIPLoader._clip,)


class FateZeroTestWan22VAELoader:
    CATEGORY = "_for_testing"  # ComfyUI's own folder for test nodes, not the pack's library folder
    FUNCTION = "load_vae"
    RETURN_TYPES = ("VAE",)
    _vae = None

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae_name": ("STRING", {"default": ""})}}

    def load_vae(self, vae_name):
        if FateZeroTestWan22VAELoader._vae is None:
            FateZeroTestWan22VAELoader._vae = models_wan.wan22_vae()
        return (FateZeroTestWan22VAELoader._vae,)


NODE_CLASS_MAPPINGS = {"FateZeroTestWanCLIPLoader": FateZeroTestWanCLIPLoader,
                       "FateZeroTestWan22VAELoader": FateZeroTestWan22VAELoader}
