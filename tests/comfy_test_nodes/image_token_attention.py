"""Test-only ComfyUI nodes: IP-Adapter-style attn2 replaces on every transformer block, and a
wrapper of whatever replace a block holds.

IP-Adapter packs add, in every cross-attention, attention to a few image tokens beside the
text. This node does the same with four fixed random tokens per width (written for the
tests, not taken from any pack), so the composition tests can wire that kind of patch
next to FateZero's nodes, in process and on the test server (which loads this folder as
an extra custom_nodes folder).
"""
from __future__ import annotations

import sys

import torch

import comfy.ldm.modules.attention as attention


def transformer_keys(diffusion_model) -> list[tuple[str, int, int]]:
    """Every ``(block, number, transformer_index)``: the pack's own walk of the UNet (one walk
    for the pack and its tests), from the loaded pack."""
    for name, module in list(sys.modules.items()):
        if name.endswith(".fatezero_attn.families.sd_unet"):
            return module.attention_blocks(diffusion_model)
    raise RuntimeError("the FateZero pack is not loaded: these test nodes patch the sites it patches")


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


# -- the IP-Adapter family's install protocol -------------------------------------------------
class ChainedReplace:
    """Stand-in for the replace object IP-Adapter plus, InstantID and PuLID install: plain
    attention plus each chained callback's output while the sigma is in its range."""

    def __init__(self, callback, **kwargs):
        self.callbacks, self.kwargs = [callback], [kwargs]

    def add(self, callback, **kwargs):
        self.callbacks.append(callback)
        self.kwargs.append(kwargs)

    def __call__(self, q, k, v, extra_options):
        out = attention.optimized_attention(q, k, v, extra_options["n_heads"])
        sigma = float(extra_options["sigmas"][0]) if "sigmas" in extra_options else float("inf")
        for callback, kwargs in zip(self.callbacks, self.kwargs):
            if kwargs["sigma_end"] <= sigma <= kwargs["sigma_start"]:
                out = out + callback(out, q, k, v, extra_options, **kwargs)
        return out.to(q.dtype)


def set_chained_replace(model, key, callback, **kwargs) -> None:
    """Their helper's behaviour: copy the option dicts; a key that holds a replace gets
    ``.add(callback)`` (on the object itself), an empty key a new ChainedReplace."""
    to = dict(model.model_options["transformer_options"])
    to["patches_replace"] = dict(to.get("patches_replace", {}))
    table = to["patches_replace"]["attn2"] = dict(to["patches_replace"].get("attn2", {}))
    if key in table:
        table[key].add(callback, **kwargs)
    else:
        table[key] = ChainedReplace(callback, **kwargs)
        model.model_options["transformer_options"] = to


def image_tokens(out, q, k, v, extra_options, weight=1.0, sigma_start=float("inf"), sigma_end=0.0):
    """``weight`` x attention to four fixed random image tokens (per width)."""
    g = torch.Generator().manual_seed(q.shape[-1] + 1)
    k_img, v_img = (torch.randn(1, 4, q.shape[-1], generator=g).to(q).expand(q.shape[0], -1, -1) for _ in range(2))
    return weight * attention.optimized_attention(q, k_img, v_img, extra_options["n_heads"])


def chained_image_tokens(model, weight: float):
    """A clone of ``model`` with image-token attention installed through the chained protocol
    on every ``(block, number, index)`` key, as IP-Adapter does on SDXL."""
    patched = model.clone()
    for key in transformer_keys(patched.model.diffusion_model):
        set_chained_replace(patched, key, image_tokens, weight=weight, sigma_start=float("inf"), sigma_end=0.0)
    return patched


def wrap_attention_replaces(model, scale: float):
    """A clone of ``model`` whose every attention replace is wrapped: the replace found on the
    key (or plain attention) is called inside, its output scaled (the log/scale/chain pattern)."""
    patched = model.clone()
    tables = patched.model_options.get("transformer_options", {}).get("patches_replace", {})
    for attn in ("attn1", "attn2"):
        for key in transformer_keys(patched.model.diffusion_model):
            inner = tables.get(attn, {}).get(key)

            def wrapped(q, k, v, extra_options, inner=inner):
                if inner is None:
                    return attention.optimized_attention(q, k, v, extra_options["n_heads"]) * scale
                return inner(q, k, v, extra_options) * scale
            install = patched.set_model_attn1_replace if attn == "attn1" else patched.set_model_attn2_replace
            install(wrapped, *key)
    return patched


class FateZeroTestChainedImageTokens(FateZeroTestImageTokenAttention):
    def patch(self, model, weight):
        return (chained_image_tokens(model, weight),)


class FateZeroTestWrapReplaces:
    CATEGORY = "_for_testing"
    FUNCTION = "patch"
    RETURN_TYPES = ("MODEL",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0})}}

    def patch(self, model, scale):
        return (wrap_attention_replaces(model, scale),)


NODE_CLASS_MAPPINGS.update(FateZeroTestChainedImageTokens=FateZeroTestChainedImageTokens,
                           FateZeroTestWrapReplaces=FateZeroTestWrapReplaces)
