"""What the fusion node decides for the edit (``FusionPlan``): frozen, read by every call of
every run it is sampled in (a run's changing state is ``run/run_state.py``'s)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from ..defaults import FUSE_MAX_QUERY
from ..edit.attention_fusion import cross_weights
from ..edit.masks import BlendMask
from ..edit.schedule import inversion_call
from ..errors import FateZeroError
from ..store.attention_store import AttentionStore


@dataclass(frozen=True, eq=False)
class FusionPlan:
    store: AttentionStore
    mapper: torch.Tensor                  # S [77, 77]
    aligned: torch.Tensor                 # [77]
    equalizer: torch.Tensor               # [77]
    cross_steps_per_token: torch.Tensor   # [77] edit steps k < n fuse cross-attention, per token
    self_steps: int                       # edit steps k < self_steps fuse self-attention
    blend: BlendMask | None = None
    target_blend_positions: tuple[int, ...] = ()  # target tokens for latent blending
    max_query: int = FUSE_MAX_QUERY
    fused_sites: frozenset | None = None  # a DiT's fused blocks (families/wan.py); None: fused by max_query
    expert: str | None = None  # two-expert store: "high" / "low", the side of the boundary this MODEL edits
    # the target prompt as the fusion node's CLIP encodes it ([tokens, width]); None: not checked
    target_context: torch.Tensor | None = field(default=None, repr=False)
    target_prompt: str = ""
    # noised-source mode: the noise the edit's sampler starts from; the source row at a step is the
    # store's clean latent brought to that step's sigma with it, not the inverted trajectory
    source_noise: torch.Tensor | None = field(default=None, repr=False)
    # read on every attention call: plain ints, computed once from the fields above
    cross_steps: int = field(init=False, repr=False)  # edit steps k < cross_steps fuse some token
    fused_steps: int = field(init=False, repr=False)  # k < fused_steps need the source row

    @property
    def latent_blending(self) -> bool:
        return self.blend is not None and self.blend.latent_blend

    def __post_init__(self):
        cross = int(self.cross_steps_per_token.max())
        object.__setattr__(self, "cross_steps", cross)
        object.__setattr__(self, "fused_steps", max(cross, self.self_steps))
        object.__setattr__(self, "target_blend_positions", tuple(self.target_blend_positions))

    def inversion_call(self, step: int) -> int:
        """The inversion call whose attention edit step ``step`` fuses: the trajectory is walked back."""
        return inversion_call(self.store.info.steps, step)

    def for_window(self, k: int) -> "FusionPlan":
        """The plan of window ``k`` of a windowed store (itself when the store is not windowed)."""
        if not self.store.info.window:
            return self
        blend = self.blend.rows(self.store.window_rows(k)) if self.blend is not None else None
        return replace(self, store=self.store.window_store(k), blend=blend)

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

    def target_roles(self, context, roles: list[str], chunk: int) -> list[str]:
        """Positive chunks whose prompt is not the target prompt (other prompts combined into the
        positive) become ``other``: plain, as ComfyUI computes them."""
        if self.target_context is None or context is None:
            return roles
        return [("cond" if self.is_target(context[r * chunk]) else "other") if role == "cond" else role
                for r, role in enumerate(roles)]

    def not_the_target(self, node: str) -> FateZeroError:
        """No positive chunk of a step carried the target prompt."""
        return FateZeroError(
            f"{node}: the sampler's positive conditioning is not the text in {node}'s 'target_prompt' "
            f"('{self.target_prompt}'), so the source words would be mapped onto other tokens. Connect a "
            f"CLIPTextEncode of exactly that text (with the CLIP connected to {node}) to the sampler's "
            f"positive, or type the positive's text into {node}'s 'target_prompt'. On the sampler node: "
            "positive = that CLIPTextEncode (combined with other prompts if you like: only the target's rows "
            "are fused).")

    def cross_weights(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The cross-attention fusion weights at edit step ``k`` (a run keeps them: ``RunState``)."""
        active = (k < self.cross_steps_per_token).float()
        return cross_weights(self.mapper, self.aligned, self.equalizer, active)
