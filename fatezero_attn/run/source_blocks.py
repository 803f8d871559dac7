"""The source row one block at a time (a DiT's fused steps): one block's source q and k held.

A whole source pass (``source_row.py``) holds every fused site's q and k until the edit call
has used them: for Wan 14B at 480p x 81 frames that is tens of GB. A DiT's blocks run one after
the other on a hidden state, so the source row can walk beside the edit call instead:
1. the source call (its own latent, sigma, context, the fusion node's patches) stops at block
   0's entry and keeps that block's inputs (``entry_hook``);
2. in the edit call, before each block up to the last fused one, the source row's hidden state
   goes through the same block (its fused sites keep their q and k), then the edit rows go
   through it and use them, and they are dropped (``SourceWalk.around_block``).
The source row's blocks run exactly as in a whole pass (same inputs, same functions, alone in
their call), so both give the same numbers; only when the tensors live differs.
"""
from __future__ import annotations

from typing import Callable

from ..errors import FateZeroError
from .run_state import SourceAttention, SourcePassDone


def walks_by_block(seam, options: dict) -> bool:
    """Whether the source row walks beside the edit call: a seam with block replaces, and no
    post-block patches (``patches["double_block"]``, ComfyUI >= 0.38), which a walk would skip."""
    return getattr(seam, "source_by_block", False) and not options.get("patches", {}).get("double_block")


def entry_hook(source: SourceAttention) -> Callable:
    """The source call's block hook: keep block 0's inputs in ``source.entry`` and stop the call."""
    def hook(block: int, args: dict, run_block: Callable) -> dict:
        source.entry = dict(args)  # the block replace's inputs (Wan: img, txt, vec, pe, transformer_options)
        raise SourcePassDone
    return hook


class SourceWalk:
    """One edit call's source row: its hidden state, taken through blocks ``0 .. last_block``."""

    def __init__(self, source: SourceAttention, last_block: int, node: str, label_site: Callable):
        """``label_site(options, block)``: the block's transformer_options as the seam labels them."""
        self.source, self.last_block, self.node, self.label_site = source, last_block, node, label_site
        # the source row's inputs to the next block; taken, so that a second call of the step runs
        # the source call again rather than the step holding a second hidden state
        self.args, source.entry = source.entry, None
        self.next_block = 0
        source.last_site = ("attn2", last_block)  # the last block's source row stops once it has that q, k

    def around_block(self, block: int, args: dict, run_block: Callable) -> dict:
        """The edit call's block ``block``: the source row's first (keeping its fused q, k), then
        the edit rows', then the source's q, k of this block are dropped."""
        if block <= self.last_block:
            self.source_block(block, run_block)
        try:
            return run_block(args)
        finally:
            self.source.qk.clear()

    def source_block(self, block: int, run_block: Callable) -> None:
        if block != self.next_block:
            raise FateZeroError(
                f"{self.node}: the model ran block {block} after block {self.next_block - 1} without FateZero's block "
                f"replace on the blocks between (a node applied after {self.node} replaces or skips blocks, e.g. a "
                f"block cache). Apply that node before the inversion and {self.node}, or leave it out. On the "
                f"sampler node: connect {self.node}'s MODEL output.")
        options = self.label_site(self.args["transformer_options"], block)
        if block == self.last_block:
            try:
                run_block({**self.args, "transformer_options": options})
            except SourcePassDone:
                pass
            self.args = None  # the source row's hidden state is no longer needed in this call
        else:
            self.args["img"] = run_block({**self.args, "transformer_options": options})["img"]
        self.next_block += 1
