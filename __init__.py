"""ComfyUI-FateZero: zero-shot text-driven video editing (FateZero, ICCV 2023) as ComfyUI nodes.

ComfyUI imports this file from ``custom_nodes/``; the nodes live in ``nodes/``, the
algorithm in ``fatezero_attn/``.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
