"""What the edit needs at each step (``FusionPlan``), and what the model wrapper tells the
attention calls of one UNet call (``call_info``)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .defaults import FUSE_MAX_QUERY
from .errors import FateZeroError
from .fusion import cross_weights
from .masks import BlendMask
from .store import AttentionStore


@dataclass
class SourceAttention:
    """The source row's fused-layer attention inputs at one edit step: ``(attn, site) -> (q, k)``
    (self-attention keys after the spatio-temporal gathering)."""
    step: int
    qk: dict = field(default_factory=dict)


@dataclass
class FusionPlan:
    store: AttentionStore
    mapper: torch.Tensor                  # S [77, 77]
    aligned: torch.Tensor                 # [77]
    equalizer: torch.Tensor               # [77]
    cross_steps_per_token: torch.Tensor   # [77] edit steps k < n fuse cross-attention, per token
    self_steps: int                       # edit steps k < self_steps fuse self-attention
    blend: BlendMask | None = None
    target_blend_positions: list[int] = field(default_factory=list)  # target tokens for latent blending
    max_query: int = FUSE_MAX_QUERY
    fused_sites: frozenset | None = None  # a DiT's fused blocks (wan_dit.py); None: fused by max_query
    expert: str | None = None  # two-expert store: "high" / "low", the side of the boundary this MODEL edits
    # the target prompt as the fusion node's CLIP encodes it ([tokens, width]); None: not checked
    target_context: torch.Tensor | None = field(default=None, repr=False)
    target_prompt: str = ""
    _weights: dict = field(default_factory=dict, repr=False)
    # per run: the edit's own blend-level cross-attention summed over the steps so far
    target_maps: torch.Tensor | None = field(default=None, repr=False)
    target_step: int | None = field(default=None, repr=False)
    # the latest step's source attention (one step is all a run needs at a time)
    source: SourceAttention | None = field(default=None, repr=False)
    # fused layers in the order a source pass meets them; the pass stops after the last
    fused_layers: list | None = field(default=None, repr=False)
    # per run: the last edit step at which a positive chunk carried the target prompt
    target_seen_step: int | None = field(default=None, repr=False)

    @property
    def latent_blending(self) -> bool:
        return self.blend is not None and self.blend.latent_blend

    def __post_init__(self):
        # read on every attention call: plain ints, computed once
        self.cross_steps = int(self.cross_steps_per_token.max())  # edit steps k < cross_steps fuse some token
        self.fused_steps = max(self.cross_steps, self.self_steps)  # k < fused_steps need the source row

    def fuses(self, key, queries: int) -> bool:
        """Whether the site ``key`` (with ``queries`` query positions per row) is fused."""
        return key in self.fused_sites if self.fused_sites is not None else queries <= self.max_query

    def replace_steps(self, attn: str) -> int:
        """Edit steps k < this fuse ``attn``."""
        return self.self_steps if attn == "attn1" else self.cross_steps

    def is_target(self, context: torch.Tensor) -> bool:
        """Whether one row's ``c_crossattn`` ``[tokens, width]`` is the target prompt's (ComfyUI
        repeats a shorter context to the batch's common length)."""
        target = self.target_context
        n = context.shape[0] // target.shape[0]
        if context.shape[-1] != target.shape[-1] or n * target.shape[0] != context.shape[0]:
            return False
        ref = target.to(context).repeat(n, 1)
        return bool((context - ref).abs().max() <= 1e-3 * max(1.0, float(ref.abs().max())))

    def target_roles(self, context, roles: list[str], chunk: int, step: int, node: str) -> list[str]:
        """Positive chunks whose prompt is not the target prompt (other prompts combined into the
        positive) become ``other``: plain, as ComfyUI computes them. No target chunk at a step stops."""
        if self.target_context is None or context is None:
            return roles
        roles = [("cond" if self.is_target(context[r * chunk]) else "other") if role == "cond" else role
                 for r, role in enumerate(roles)]
        if "cond" in roles:
            self.target_seen_step = step
        elif self.target_seen_step != step:
            raise FateZeroError(
                f"{node}: the sampler's positive conditioning is not the text in {node}'s 'target_prompt' "
                f"('{self.target_prompt}'), so the source words would be mapped onto other tokens. Connect a "
                f"CLIPTextEncode of exactly that text (with the CLIP connected to {node}) to the sampler's "
                f"positive, or type the positive's text into {node}'s 'target_prompt'. On the sampler node: "
                "positive = that CLIPTextEncode (combined with other prompts if you like: only the target's rows "
                "are fused).")
        return roles

    def cross_weights(self, k: int):
        if k not in self._weights:
            active = (k < self.cross_steps_per_token).float()
            self._weights[k] = cross_weights(self.mapper, self.aligned, self.equalizer, active)
        return self._weights[k]


def call_info(roles: list[str], chunk: int, step: int | None = None, source: SourceAttention | None = None,
              other_patches: dict | None = None, capture: int | None = None, target: bool = False,
              layout: dict | None = None) -> dict:
    """What the wrapper tells the attention calls of one UNet call (``transformer_options["fatezero"]``):
    row roles (``source`` / ``cond`` (fused) / ``uncond`` / ``other`` chunks of ``chunk`` rows), the
    edit step, the source pass's q and k, other nodes' replaces per ``(attn, site)``, the inversion
    call to capture (or None), whether to sum the target words' maps, and the seam's ``layout``
    of the latent (Wan: its token grid)."""
    return {"roles": roles, "chunk": chunk, "step": step, "source": source, "other_patches": other_patches or {},
            "capture": capture, "target": target, **(layout or {})}
