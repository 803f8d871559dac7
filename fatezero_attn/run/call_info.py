"""What the model wrapper tells the attention calls of one model call (``CallInfo``, carried in
``transformer_options["fatezero"]``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .run_state import RunState, SourceAttention

ROLES = ("source", "cond", "uncond", "other")


@dataclass
class CallInfo:
    """One model call, as its attention calls see it.

    ``roles``: one per chunk of ``chunk`` rows: ``source`` (the source pass), ``cond`` (the target
    prompt's positive rows: fused), ``uncond`` and ``other`` (plain). ``step``: the edit step, or None
    outside the edit's steps. ``source``: the source row's q, k at this step. ``other_patches``: other
    nodes' replaces per ``(attn, site)`` (``composition.py``). ``capture``: the inversion call to
    record, or None. ``target``: sum the target words' maps (latent blend). ``grid``: a DiT's token
    grid ``(T, h, w)`` of this call's latent. ``block_hook(block, args, run_block)``: runs each of a
    DiT's blocks in this call (``source_blocks.py``), or None."""
    roles: list[str]
    chunk: int
    run: RunState | None = None
    step: int | None = None
    source: SourceAttention | None = None
    other_patches: dict = field(default_factory=dict)
    capture: int | None = None
    target: bool = False
    grid: tuple[int, int, int] | None = None
    block_hook: Callable | None = None
    # composition's re-entry marks: inside another node's replace called from ours, and whether it
    # called ours inside itself (one model call runs its attention calls one after the other)
    calling_other: bool = False
    other_called_ours: bool = False

    def rows(self, role: str) -> list[int]:
        """The chunk indices with ``role``."""
        return [r for r, got in enumerate(self.roles) if got == role]

    def chunk_rows(self, r: int) -> slice:
        return slice(r * self.chunk, (r + 1) * self.chunk)
