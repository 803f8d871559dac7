"""The pack's ComfyUI nodes, one file per node family. Each module exports
``NODE_CLASS_MAPPINGS`` and ``NODE_DISPLAY_NAME_MAPPINGS``; this file merges them."""
from importlib import import_module

CATEGORY = "FateZero"

_FAMILIES = ("video", "inversion", "store", "blend", "preview", "fusion", "temporal", "windows")

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
for _name in _FAMILIES:
    _module = import_module(f".{_name}", __name__)
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
