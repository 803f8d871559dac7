"""The toy world's model: ComfyUI's own ``WanModel`` (t2v, 16 latent channels, Wan's 4096-wide
text input) at a small width, the tiny umT5 of the tests' Wan builders with a SentencePiece model
trained on the world's captions, and the pieces training needs (contexts, the flow target).

Every caption has 7 words, so with umT5's end token 8 context rows; the other 504 of umT5's 512
rows are padding, all zero (ComfyUI's umT5 zeroes them), so every padding row gets the same key
and value. Training passes one padding row whose attention logit gets ``log(504)``: exactly the
attention over all 512 rows, at a 50th of the text-embedding cost (``padded_cross_attention``).
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

from . import world

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORDS = 7                                 # every caption: "a {colour} {shape} moving {motion} on {background}"
REAL_ROWS = WORDS + 1                     # and umT5's end token
PAD_ROWS = 512 - REAL_ROWS                # umT5's padding rows, all zero
DIM, LAYERS, FFN = 128, 4, 512            # WanModel widths (one head per 128: ComfyUI's detection)


def comfy_path() -> Path:
    """The ComfyUI the tests use (``.host/ComfyUI``), or ``COMFYUI_PATH``."""
    import os
    return Path(os.environ.get("COMFYUI_PATH") or REPO / ".host" / "ComfyUI")


def import_comfy() -> None:
    """Make ComfyUI and the tests' model builders importable (CPU, ComfyUI's own arguments)."""
    for p in (str(comfy_path()), str(REPO / "tests")):
        if p not in sys.path:
            sys.path.insert(0, p)
    import comfy.options
    comfy.options.enable_args_parsing()
    argv, sys.argv = sys.argv, [sys.argv[0], "--cpu"]
    try:
        import comfy.cli_args  # noqa: F401  (parses --cpu once)
    finally:
        sys.argv = argv


def captions() -> list[str]:
    return world.all_captions()


def tokenizer_model() -> bytes:
    """A SentencePiece model in which every word of the captions is one piece."""
    import models_wan
    return models_wan.train_spiece(tuple(captions()))


def text_encoder(spiece: bytes):
    import models_wan
    return models_wan.wan_text_encoder(spiece, seed=0)


@torch.no_grad()
def caption_contexts(clip, texts: list[str]) -> torch.Tensor:
    """The real rows of each caption's umT5 context: ``[len(texts), REAL_ROWS, 4096]`` (an empty
    caption: its end token, then zero rows)."""
    out = []
    for text in texts:
        context = clip.encode_from_tokens(clip.tokenize(text))[0]  # [512, 4096]
        real = context[:REAL_ROWS].float()
        if text and not (context[REAL_ROWS:] == 0).all():
            raise ValueError(f"'{text}' is not {WORDS} pieces: its context has more than {REAL_ROWS} rows")
        out.append(real)
    return torch.stack(out)


def diffusion_model(seed: int = 0) -> torch.nn.Module:
    import models_wan
    return models_wan.wan_model(seed, dim=DIM, num_layers=LAYERS, ffn_dim=FFN)


def with_padding_row(real: torch.Tensor) -> torch.Tensor:
    """``[B, REAL_ROWS, 4096]`` -> the real rows and one zero padding row ``[B, REAL_ROWS + 1, 4096]``."""
    return torch.cat([real, real.new_zeros(real.shape[0], 1, real.shape[-1])], 1)


def padded_cross_attention(func, q, k, v, heads, *args, **kwargs):
    """``optimized_attention_override`` for training: a cross-attention over the real rows and one
    padding row is computed as over all 512 rows (the padding row's logit + log(PAD_ROWS))."""
    if k.shape[1] != REAL_ROWS + 1 or args or kwargs.get("mask") is not None:
        return func(q, k, v, heads, *args, **kwargs)
    b, n, c = q.shape
    d = c // heads
    qh, kh, vh = (t.view(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    bias = torch.zeros(k.shape[1], dtype=q.dtype, device=q.device)
    bias[-1] = math.log(PAD_ROWS)
    out = torch.nn.functional.scaled_dot_product_attention(qh, kh, vh, attn_mask=bias.view(1, -1))
    return out.transpose(1, 2).reshape(b, n, c)


def uniform_self_attention(func, q, k, v, heads, *args, **kwargs):
    """``optimized_attention_override`` for the gate: self-attention replaced by the mean of the
    values (every token attends to every token alike); cross-attention as ``padded_cross_attention``."""
    if k.shape[1] == q.shape[1] and k.shape[1] != REAL_ROWS + 1:
        return v.mean(1, keepdim=True).expand_as(v)
    return padded_cross_attention(func, q, k, v, heads, *args, **kwargs)


def latent_format():
    import comfy.latent_formats
    return comfy.latent_formats.Wan21()


def flow_batch(x0: torch.Tensor, g: torch.Generator, sigmas: torch.Tensor | None = None):
    """Flow matching: ``x_sigma = (1 - sigma) x0 + sigma noise``, target ``noise - x0`` (ComfyUI's
    CONST sampling: denoised = x - sigma * output); timestep = 1000 sigma as ComfyUI passes it."""
    if sigmas is None:
        sigmas = torch.rand(x0.shape[0], generator=g)
    noise = torch.randn(x0.shape, generator=g)
    s = sigmas.view(-1, 1, 1, 1, 1)
    return (1 - s) * x0 + s * noise, sigmas * 1000, noise - x0


def batch(seeds: list[int]) -> tuple[torch.Tensor, list[world.Clip]]:
    """World clips ``seeds`` in the model's space (``process_in`` of the LATENT): ``[B, 16, T, H, W]``."""
    clips, latents = zip(*(world.sample(s) for s in seeds))
    return latent_format().process_in(torch.stack(latents)), list(clips)
