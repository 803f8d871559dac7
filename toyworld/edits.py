"""Edits of toy-world clips through the pack's real nodes, and what they keep and change.

An edit: FateZero DDIM Inversion of the clip with its caption, FateZero Attention Fusion to the
target caption, SamplerCustomAdvanced from the inverted noise on the inversion's sigmas, as the
Wan workflows wire it. Baselines, run on the same clips: the same edit with every fraction 0
(no fusion: plain sampling from the inverted noise), and re-noising the source (KSampler at
``denoise`` < 1, SDEdit). Measures, as video-editing benchmarks do: the edit applied (the colour
inside the source's object mask is the target's), structure kept (the found object's trajectory
against the source's, in latent pixels), background kept (PSNR outside the true mask).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import world


@dataclass
class Setting:
    steps: int = 20
    cfg: float = 4.0
    cross: float = 0.8
    self_: float = 0.8
    fused_blocks: str = "auto"
    blend_blocks: str = "auto"
    renoise: float = 0.7
    iterations: int = 1  # the inversion's fixed-point iterations
    source: str = "inverted"  # the fusion node's source_latents: "inverted" or "noised source"
    seed: int = 0  # the noised source's (and its sampler's) RandomNoise seed


def swap_colour(clip: world.Clip, colour: str) -> str:
    return world.caption(colour, clip.shape, clip.motion, clip.background)


class Editor:
    """The nodes of one ComfyUI process (``node(name)`` makes one), a loaded toy MODEL and its CLIP."""

    def __init__(self, node, model, clip):
        self.node, self.model, self.clip = node, model, clip
        self._conds: dict = {}

    def encode(self, text: str):
        if text not in self._conds:
            self._conds[text] = self.node("CLIPTextEncode").encode(self.clip, text)[0]
        return self._conds[text]

    def invert(self, latent: torch.Tensor, source: str, s: Setting):
        return self.node("FateZeroDDIMInversion").invert(
            self.model, self.encode(source), {"samples": latent[None]}, s.steps, temporal_mode="per-frame",
            temporal_min_channels=0, video_groupnorm=False, clean_sigma="0 (ComfyUI)", store_mode="auto",
            cache_replace_steps=0.8, window=0, flow_inversion="fixed-point", fixed_point_iterations=s.iterations,
            blend_blocks=s.blend_blocks)

    def edit(self, inverted, source: str, target: str, s: Setting, fractions: bool = True, blend_words: str = ""):
        """The edited LATENT ``[16, T, H, W]``; ``fractions`` False: every replace fraction 0."""
        latent, store, sigmas, noise = inverted[:4]
        blend = None
        if blend_words:
            blend = self.node("FateZeroBlendMask").make(store, self.clip, source, blend_words, 0.3)[0]
        cross, self_ = (s.cross, s.self_) if fractions else (0.0, 0.0)
        fresh = None
        if s.source == "noised source":  # the sampler starts from fresh noise on the source latent
            fresh = self.node("RandomNoise").get_noise(s.seed)[0]
            noise, latent = fresh, {"samples": self.model.model.process_latent_out(store.clean_latent)}
        fused = self.node("FateZeroAttentionFusion").patch(self.model, store, self.clip, source, target, cross, self_,
                                                          "auto", "", "", blend, s.fused_blocks, s.source, fresh)[0]
        guider = self.node("CFGGuider").get_guider(fused, self.encode(target), self.encode(""), s.cfg)[0]
        sampler = self.node("KSamplerSelect").get_sampler("euler")[0]
        return self.node("SamplerCustomAdvanced").sample(noise, guider, sampler, sigmas, latent)[0]["samples"][0]

    def renoise(self, latent: torch.Tensor, target: str, s: Setting, seed: int) -> torch.Tensor:
        """SDEdit: the source noised to ``s.renoise`` of the schedule and sampled with the target."""
        out = self.node("KSampler").sample(self.model, seed, s.steps, s.cfg, "euler", "simple", self.encode(target),
                                           self.encode(""), {"samples": latent[None]}, denoise=s.renoise)[0]
        return out["samples"][0]


def trajectory_error(edited: torch.Tensor, clip: world.Clip) -> float:
    """Mean distance (latent pixels) between the edited clip's object centre and the source's, per
    frame; a frame with no object counts as the picture's side."""
    found = world.centroids(world.object_pixels(edited))
    truth = world.centroids(world.masks(clip))
    d = (found - truth).norm(dim=1)
    return float(torch.where(torch.isnan(d), torch.full_like(d, float(world.SIZE)), d).mean())


def measure(edited: torch.Tensor, source: torch.Tensor, clip: world.Clip, target_colour: str) -> dict:
    mask = world.masks(clip)
    return {"applied": world.colour_inside(edited, mask) == target_colour,
            "trajectory_error": trajectory_error(edited, clip),
            "background_psnr": world.psnr_outside(edited, source, mask)}


def summary(rows: list[dict]) -> dict:
    n = len(rows)
    return {"applied": sum(r["applied"] for r in rows) / n,
            "trajectory_error": sum(r["trajectory_error"] for r in rows) / n,
            "background_psnr": sum(r["background_psnr"] for r in rows) / n}


def colour_swaps(editor: Editor, seeds: list[int], s: Setting, blend: bool = False) -> dict[str, dict]:
    """A colour swap on each clip (to the next palette colour): fused, without fusion, re-noised;
    with ``blend``, the fused edit also with the blend mask on the colour and shape words."""
    names = list(world.COLOURS)
    rows: dict[str, list] = {"fused": [], "no fusion": [], "renoise": []}
    if blend:
        rows["fused + blend mask"] = []
    for seed in seeds:
        clip, latent = world.sample(seed)
        target_colour = names[(names.index(clip.colour) + 1) % len(names)]
        source, target = clip.caption, swap_colour(clip, target_colour)
        inverted = editor.invert(latent, source, s)
        rows["fused"].append(measure(editor.edit(inverted, source, target, s), latent, clip, target_colour))
        rows["no fusion"].append(measure(editor.edit(inverted, source, target, s, False), latent, clip, target_colour))
        rows["renoise"].append(measure(editor.renoise(latent, target, s, seed), latent, clip, target_colour))
        if blend:
            edited = editor.edit(inverted, source, target, s, blend_words=f"{clip.colour}, {clip.shape}")
            rows["fused + blend mask"].append(measure(edited, latent, clip, target_colour))
    return {k: summary(v) for k, v in rows.items()}


def reconstruction_table(editor: Editor, seeds: list[int], s: Setting, steps: list[int],
                         iterations: list[int]) -> dict[int, dict[int, float]]:
    """``{steps: {iterations: mean relative error}}`` of inverting each clip with its caption and
    sampling it back at CFG 1 without fusion: how exact the inversion is on a trained model."""
    out: dict[int, dict[int, float]] = {}
    for n in steps:
        out[n] = {}
        for i in iterations:
            si = Setting(**{**s.__dict__, "steps": n, "iterations": i, "cfg": 1.0})
            errors = []
            for seed in seeds:
                clip, latent = world.sample(seed)
                back = editor.edit(editor.invert(latent, clip.caption, si), clip.caption, clip.caption, si, False)
                errors.append(float((back - latent).norm() / latent.norm()))
            out[n][i] = sum(errors) / len(errors)
    return out


def reconstruction_error(editor: Editor, seed: int, s: Setting) -> float:
    """The source edited to itself with every fraction 1: relative error to the source latent."""
    clip, latent = world.sample(seed)
    s1 = Setting(**{**s.__dict__, "cross": 1.0, "self_": 1.0})
    out = editor.edit(editor.invert(latent, clip.caption, s1), clip.caption, clip.caption, s1)
    return float((out - latent).norm() / latent.norm())


def fmt(table: dict[str, dict]) -> str:
    lines = ["| edit | applied | trajectory error (px) | background PSNR (dB) |", "|---|---|---|---|"]
    for name, r in table.items():
        psnr = "inf" if math.isinf(r["background_psnr"]) else f"{r['background_psnr']:.1f}"
        lines.append(f"| {name} | {100 * r['applied']:.0f}% | {r['trajectory_error']:.2f} | {psnr} |")
    return "\n".join(lines)


def fmt_reconstruction(table: dict[int, dict[int, float]]) -> str:
    iterations = list(next(iter(table.values())))
    lines = ["| steps | " + " | ".join(f"{i} iteration(s)" for i in iterations) + " |",
             "|---|" + "---|" * len(iterations)]
    lines += [f"| {n} | " + " | ".join(f"{row[i]:.3f}" for i in iterations) + " |" for n, row in table.items()]
    return "\n".join(lines)
