"""Measure a toy-world model: the gate (does it need self-attention for layout, does plain
sampling follow the prompt), straight on the ``WanModel`` with a plain Euler flow sampler.

    .host/venv/bin/python -m toyworld.evaluate                 # the committed weights
    .host/venv/bin/python -m toyworld.evaluate --checkpoint toyworld/runs/toy_wan.pt
"""
from __future__ import annotations

import argparse
import json

import torch

from . import model as tw
from . import world

GATE_SIGMAS = (0.6, 0.7, 0.8)


@torch.no_grad()
def denoising_loss(net, contexts: torch.Tensor, index: dict, seeds: list[int], override) -> float:
    """Mean flow-matching loss over ``seeds`` clips at the gate's noise levels (same noise each call)."""
    x0, clips = tw.batch(seeds)
    rows = torch.tensor([index[c.caption] for c in clips])
    total = 0.0
    for i, sigma in enumerate(GATE_SIGMAS):
        g = torch.Generator().manual_seed(10_000 + i)
        x, timestep, target = tw.flow_batch(x0, g, torch.full((len(seeds),), sigma))
        out = net(x, timestep, tw.with_padding_row(contexts[rows]), transformer_options={"optimized_attention_override": override})
        total += float(torch.nn.functional.mse_loss(out.float(), target))
    return total / len(GATE_SIGMAS)


@torch.no_grad()
def sample(net, context: torch.Tensor, uncond: torch.Tensor, seed: int, steps: int = 20, cfg: float = 4.0,
           shift: float = 3.0) -> torch.Tensor:
    """Euler flow sampling of one clip (model space ``[1, 16, T, H, W]``), CFG, shifted sigmas."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, world.CHANNELS, world.FRAMES, world.SIZE, world.SIZE, generator=g)
    t = torch.linspace(1, 0, steps + 1)
    sigmas = shift * t / (1 + (shift - 1) * t)
    ctx = tw.with_padding_row(torch.stack([context, uncond]))
    opts = {"optimized_attention_override": tw.padded_cross_attention}
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        v = net(x.expand(2, -1, -1, -1, -1), torch.full((2,), float(s) * 1000), ctx, transformer_options=opts)
        v = v[1:] + cfg * (v[:1] - v[1:])
        x = x + (s_next - s) * v
    return x


def follows(latent: torch.Tensor, clip: world.Clip) -> dict:
    """What a sampled clip (the LATENT ``[16, T, H, W]``) shows against its caption."""
    found = world.object_pixels(latent)
    frames_with = int((found.sum((1, 2)) > 0).sum())
    colour = world.colour_inside(latent, found) if found.any() else None
    c = world.centroids(found)
    dy, dx = world.MOTIONS[clip.motion]
    moved = (c[-1] - c[0]) if frames_with == world.FRAMES else torch.tensor([float("nan")] * 2)
    direction = bool(moved[0] * dy + moved[1] * dx > 1.0)  # at least a pixel along the caption's motion
    return {"colour": colour == clip.colour, "object_in_every_frame": frames_with == world.FRAMES,
            "motion": direction}


def gate(net, contexts, texts, n: int = 32, samples: int = 16) -> dict:
    index = {t: i for i, t in enumerate(texts)}
    seeds = list(range(10_000_000, 10_000_000 + n))  # clips not seen in training
    intact = denoising_loss(net, contexts, index, seeds, tw.padded_cross_attention)
    uniform = denoising_loss(net, contexts, index, seeds, tw.uniform_self_attention)
    fmt = tw.latent_format()
    checks = []
    for i in range(samples):
        clip = world.random_clip(torch.Generator().manual_seed(20_000_000 + i))
        x = sample(net, contexts[index[clip.caption]], contexts[len(texts)], seed=i)
        checks.append(follows(fmt.process_out(x)[0], clip))
    share = lambda k: sum(c[k] for c in checks) / len(checks)
    return {"loss_intact": intact, "loss_uniform_self_attention": uniform, "ratio": uniform / intact,
            "colour": share("colour"), "object_in_every_frame": share("object_in_every_frame"),
            "motion": share("motion")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="a training checkpoint (its EMA weights); default: the committed weights")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tw.import_comfy()
    spiece = tw.tokenizer_model()
    texts = tw.captions()
    contexts = tw.caption_contexts(tw.text_encoder(spiece), texts + [""])
    net = tw.diffusion_model(0)
    if args.checkpoint:
        net.load_state_dict(torch.load(args.checkpoint, weights_only=False)["ema"])
    else:
        from safetensors.torch import load_file
        from .train import MODEL_FILE, WEIGHTS
        net.load_state_dict({k: v.float() for k, v in load_file(str(WEIGHTS / MODEL_FILE)).items()})
    net.eval()
    print(json.dumps(gate(net, contexts, texts), indent=1))


if __name__ == "__main__":
    main()
