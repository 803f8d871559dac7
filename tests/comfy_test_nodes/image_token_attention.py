"""A test-only ComfyUI node: an IP-Adapter-style attn2 replace on every transformer block.

IP-Adapter packs add, in every cross-attention, attention to a few image tokens beside the
text. This node does the same with four fixed random tokens per width (written for the
tests, not taken from any pack), so the composition tests can wire that kind of patch
next to FateZero's nodes, in process and on the test server (which loads this folder as
an extra custom_nodes folder).
"""
from __future__ import annotations

import torch

import comfy.ldm.modules.attention as attention


def transformer_keys(diffusion_model) -> list[tuple[str, int, int]]:
    keys = []
    for name, blocks in (("input", diffusion_model.input_blocks), ("middle", [diffusion_model.middle_block]),
                         ("output", diffusion_model.output_blocks)):
        for number, block in enumerate(blocks):
            for layer in block:
                if isinstance(layer, attention.SpatialTransformer):
                    keys += [(name, number, i) for i in range(len(layer.transformer_blocks))]
    return keys


def image_token_attention(model, weight: float):
    """A clone of ``model`` whose every attn2 adds ``weight`` x attention to the image tokens."""
    tokens = {}

    def attn2(q, k, v, extra_options):
        dim = q.shape[-1]
        if dim not in tokens:
            g = torch.Generator().manual_seed(dim)
            tokens[dim] = (torch.randn(1, 4, dim, generator=g), torch.randn(1, 4, dim, generator=g))
        k_img, v_img = (t.to(q).expand(q.shape[0], -1, -1) for t in tokens[dim])
        heads = extra_options["n_heads"]
        return (attention.optimized_attention(q, k, v, heads)
                + weight * attention.optimized_attention(q, k_img, v_img, heads))

    patched = model.clone()
    for key in transformer_keys(patched.model.diffusion_model):
        patched.set_model_attn2_replace(attn2, *key)
    return patched


class FateZeroTestImageTokenAttention:
    CATEGORY = "_for_testing"  # ComfyUI's own folder for test nodes, not the pack's library folder
    FUNCTION = "patch"
    RETURN_TYPES = ("MODEL",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "weight": ("FLOAT", {"default": 0.6, "min": 0.0, "max": 2.0})}}

    def patch(self, model, weight):
        return (image_token_attention(model, weight),)


NODE_CLASS_MAPPINGS = {"FateZeroTestImageTokenAttention": FateZeroTestImageTokenAttention}
