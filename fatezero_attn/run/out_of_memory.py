"""An out-of-memory error at a fused edit step, told in the run's own figures.

ComfyUI treats ``torch.OutOfMemoryError`` specially (it frees models and prints its advice), so
the error keeps its type and gains a message: what the source row held when the step failed, the
video's tokens, and which inputs lower it.
"""
from __future__ import annotations

import torch

from .call_info import CallInfo


def tensor_bytes(value) -> int:
    """Bytes of the tensors in ``value`` (nested dicts, lists and tuples; other leaves count 0)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    return 0


def source_held(info: CallInfo) -> tuple[int, bool]:
    """``(bytes, walked)``: the source row's tensors alive in this call (its q, k, and for a walk
    the hidden state and block inputs, RoPE frequencies and transformer options excluded)."""
    if info.source is None:
        return 0, False
    held = tensor_bytes(info.source.qk)
    walk = getattr(info.block_hook, "__self__", None)
    args = getattr(walk, "args", None) or {}
    held += tensor_bytes({k: v for k, v in args.items() if k in ("img", "txt")})
    return held, info.source.by_block


def fused_step_oom(error: BaseException, node: str, info: CallInfo, latent_shape, blocks_by_index: bool):
    """``error`` (out of memory) with this fused step's figures and the inputs that lower them."""
    held, walked = source_held(info)
    size = " x ".join(str(n) for n in latent_shape[1:])
    tokens = "" if info.grid is None else f", {info.grid[0] * info.grid[1] * info.grid[2]:,} tokens a row"
    how = ("one block's source q, k and the source row's hidden state (it walks the blocks beside the edit)"
           if walked else "every fused layer's source q, k (a whole source pass)")
    fewer = (" 'fused_blocks' on FateZero Attention Fusion (a narrower range such as '0-4': a shorter, cheaper source "
             "pass);" if blocks_by_index else "")
    message = (
        f"{node}: out of memory at fused edit step {info.step} (latent {size}{tokens}, {len(info.roles)} row(s) of "
        f"{info.chunk} in this call; the source row held {held / 2**20:,.0f} MiB: {how}). To lower it: fewer frames "
        f"or a smaller size on the video loader and the inversion (memory grows with the tokens);{fewer} CFG 1 (one "
        f"edit row a call); or ComfyUI's offloading (--lowvram, --reserve-vram) or a GGUF / fp8 model. "
        f"({type(error).__name__}: {error})")
    try:
        return type(error)(message)
    except TypeError:  # an error type that takes other arguments: keep it, the message goes in a note
        error.add_note(message)
        return error
