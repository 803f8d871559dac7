"""Model families: everything the pack does differently per model (``base.py`` says what a
family owns). ``family_of`` finds a MODEL's family; ``FAMILIES`` holds them by name (a store
records its family's name). A new family is one module and one ``register`` call."""
from __future__ import annotations

from typing import Callable

from . import sd_unet, wan
from .base import ModelFamily

FAMILIES: dict[str, ModelFamily] = {}
_DETECTORS: list[Callable] = []


def register(families, detect: Callable) -> None:
    """Add a module's families (by name) and its ``detect(model_patcher) -> family | None``."""
    FAMILIES.update({f.name: f for f in families})
    _DETECTORS.append(detect)


def unregister(families, detect: Callable) -> None:
    """Take back a ``register`` (a family added for one test)."""
    for f in families:
        FAMILIES.pop(f.name, None)
    _DETECTORS.remove(detect)


def family_of(model_patcher) -> ModelFamily | None:
    """The family of a ComfyUI MODEL, or None when the pack does not support it."""
    for detect in _DETECTORS:
        family = detect(model_patcher)
        if family is not None:
            return family
    return None


register(wan.FAMILIES, wan.detect)  # first: a Wan model has no UNet blocks the SD detection reads
register(sd_unet.FAMILIES, sd_unet.detect)
