"""The UNet's attention layers and their sizes for a given latent, read from its modules.

Used to say before a run what it will hold (the source cache's size) and by the bench to
compute the authors' map store exactly."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class AttnLayer:
    block: str       # "input" / "middle" / "output", ComfyUI's names
    number: int
    depth: int       # transformer index inside the block
    h: int
    w: int
    channels: int    # inner dim of the attention (what temporal_min_channels compares with)
    heads: int
    context_dim: int
    cross_channels: int = 0  # inner dim of cross-attention's keys

    @property
    def q(self) -> int:
        return self.h * self.w


def attention_layout(diffusion_model, latent_hw: tuple[int, int]) -> list[AttnLayer]:
    """Every transformer block with its query resolution for a latent of ``latent_hw``,
    following ComfyUI's UNet forward (stride-2 conv downsampling, upsampling to the skip's size)."""
    from comfy.ldm.modules.attention import SpatialTransformer
    from comfy.ldm.modules.diffusionmodules.openaimodel import Downsample, Upsample

    layers: list[AttnLayer] = []
    h, w = latent_hw
    skips: list[tuple[int, int]] = []

    def visit(block, name, number):
        nonlocal h, w
        for layer in block:
            if isinstance(layer, Downsample):
                h, w = ((h + 1) // 2, (w + 1) // 2) if layer.use_conv else (h // 2, w // 2)
            elif isinstance(layer, Upsample):
                h, w = skips[-1] if skips else (h * 2, w * 2)
            elif isinstance(layer, SpatialTransformer):
                for d, tb in enumerate(layer.transformer_blocks):
                    layers.append(AttnLayer(name, number, d, h, w, tb.attn1.to_q.out_features, tb.attn1.heads,
                                            tb.attn2.to_k.in_features, tb.attn2.to_k.out_features))

    for i, block in enumerate(diffusion_model.input_blocks):
        visit(block, "input", i)
        skips.append((h, w))
    if diffusion_model.middle_block is not None:
        visit(diffusion_model.middle_block, "middle", 0)
    for i, block in enumerate(diffusion_model.output_blocks):
        h, w = skips.pop()
        visit(block, "output", i)
    return layers
