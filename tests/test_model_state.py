"""The MODEL fingerprint (``store/model_state.py``) as ComfyUI 0.38's dynamic VRAM changes a
model's parameters around a run (read in 0.38.1's ``comfy/model_patcher.py`` and ``comfy/ops.py``;
imitated here on 0.3.75's ``ModelPatcher``): it must not change when a run loads the model."""
from __future__ import annotations

import collections

import torch


class Base(torch.nn.Module):
    """What the fingerprint reads of a ComfyUI model: its config's type and the diffusion model."""

    def __init__(self):
        super().__init__()
        self.model_config = type("TinyConfig", (), {})()
        self.diffusion_model = torch.nn.Sequential(torch.nn.Linear(4, 300), torch.nn.GroupNorm(3, 300))
        with torch.no_grad():
            for i, p in enumerate(self.diffusion_model.parameters()):
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(i)))


def patcher():
    import comfy.model_patcher
    return comfy.model_patcher.ModelPatcher(Base(), torch.device("cpu"), torch.device("cpu"))


def set_param(module: torch.nn.Module, name: str, value: torch.Tensor) -> None:
    setattr(module, name, torch.nn.Parameter(value, requires_grad=False))


def test_a_weight_not_in_the_file_has_the_fingerprint_of_the_zeros_it_becomes(pack):
    """0.38 builds models on "meta" and fills a weight the file lacks with zeros on its first
    cast (``ops.materialize_meta_param``): the inversion (before) and the fusion node (after)
    must see the same model."""
    digest = pack.fatezero_attn.store.model_state.weights_digest
    m = patcher()
    norm = m.model.diffusion_model[1]
    set_param(norm, "bias", torch.empty(300, device="meta"))
    before = digest(m)
    set_param(norm, "bias", torch.zeros(300))
    assert digest(m) == before
    set_param(norm, "bias", torch.full((300,), 0.5))
    assert digest(m) != before


def test_a_force_loaded_weight_is_fingerprinted_from_its_backup(pack):
    """0.38's ``ModelPatcherDynamic.load`` replaces a small module's weights by cast (and
    LoRA-patched) copies on the load device and keeps the originals in the patcher's ``backup``."""
    digest = pack.fatezero_attn.store.model_state.weights_digest
    m = patcher()
    before = digest(m)
    norm = m.model.diffusion_model[1]
    key = "diffusion_model.1.weight"
    m.backup[key] = collections.namedtuple("Dimension", ["weight", "inplace_update"])(norm.weight, False)
    set_param(norm, "weight", norm.weight.detach().to(torch.float16) * 2)
    assert digest(m) == before
    m.backup.clear()
    assert digest(m) != before
