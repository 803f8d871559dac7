"""Saving and loading the attention store through the real nodes and ComfyUI's folders."""
from __future__ import annotations

import json
import struct

import pytest
import torch


@pytest.fixture(scope="module")
def inverted(comfy_nodes, tiny_model):
    """The inversion's outputs: (inverted_latent, attention_store, edit_sigmas, inverted_noise, expert_split_step)."""
    g = torch.Generator().manual_seed(1)
    cond = [[torch.randn(1, 77, 768, generator=g), {}]]
    latent = {"samples": torch.randn(2, 4, 16, 16, generator=g) * 5}
    node = comfy_nodes.NODE_CLASS_MAPPINGS["FateZeroDDIMInversion"]()
    return node.invert(tiny_model, cond, latent, 3, "middle", 0, True, "alphas_cumprod[0] (authors)")


@pytest.fixture(scope="module")
def store(inverted):
    return inverted[1]


@pytest.fixture
def folders(tmp_path):
    import folder_paths
    old = folder_paths.get_output_directory(), folder_paths.get_temp_directory()
    folder_paths.set_output_directory(str(tmp_path / "output"))
    folder_paths.set_temp_directory(str(tmp_path / "temp"))
    yield tmp_path
    folder_paths.set_output_directory(old[0])
    folder_paths.set_temp_directory(old[1])


def save(comfy_nodes, store, prefix="fatezero/jeep", folder="output"):
    return comfy_nodes.NODE_CLASS_MAPPINGS["FateZeroSaveAttentionStore"]().save(store, prefix, folder)["result"][0]


def load(comfy_nodes, name):
    return comfy_nodes.NODE_CLASS_MAPPINGS["FateZeroLoadAttentionStore"]().load(name)[0]


def test_round_trip_and_listing(comfy_nodes, store, folders):
    name = save(comfy_nodes, store)
    assert name.startswith("output/fatezero/jeep_") and (folders / name).is_file()
    second = save(comfy_nodes, store)
    assert second != name  # a counter: nothing is overwritten
    cls = comfy_nodes.NODE_CLASS_MAPPINGS["FateZeroLoadAttentionStore"]
    assert {name, second} <= set(cls.INPUT_TYPES()["required"]["store_file"][0])
    loaded = load(comfy_nodes, name)
    assert loaded.info == store.info
    for field in ("sigmas", "unet_inputs", "source_context", "cross_maps"):
        assert torch.equal(getattr(loaded, field), getattr(store, field)), field
    assert loaded.source_conds.keys() == store.source_conds.keys() == {"c_crossattn"}
    assert torch.equal(loaded.source_conds["c_crossattn"], store.source_conds["c_crossattn"])
    assert loaded.info.model_parts["weight patches"] == "none"
    temp_name = save(comfy_nodes, store, folder="temp")
    assert temp_name.startswith("temp/fatezero/") and load(comfy_nodes, temp_name).info == store.info


def test_a_loaded_store_gives_the_inversions_outputs(comfy_nodes, inverted, folders):
    """Load Attention Store's other outputs are the inversion's, so a saved store starts the edit
    after a restart with the sampler wired as from the inversion."""
    latent, store, sigmas, noise, split = inverted
    got = comfy_nodes.NODE_CLASS_MAPPINGS["FateZeroLoadAttentionStore"]().load(save(comfy_nodes, store))
    assert torch.equal(got[1]["samples"], latent["samples"])
    assert torch.equal(got[2], sigmas) and got[4] == split == 0
    assert float(sigmas[-1]) == float(store.sigmas[0]) > 0, "the edit ends at alphas_cumprod[0], as the inversion's"
    assert torch.equal(got[3].generate_noise(latent), noise.generate_noise(latent))


def test_a_file_without_the_inverted_latent_blocks_only_the_latent_outputs(comfy_nodes, store, folders):
    """A file of an older version (no inverted latent): the store and sigmas load; a node fed the
    LATENT or NOISE output stops with a message saying what to do."""
    from dataclasses import replace

    from comfy_execution.graph import ExecutionBlocker
    got = comfy_nodes.NODE_CLASS_MAPPINGS["FateZeroLoadAttentionStore"]().load(
        save(comfy_nodes, replace(store, inverted_latent=None)))
    assert got[0].info == store.info and torch.equal(got[2], store.sampler_sigmas())
    for blocked in (got[1], got[3]):
        assert isinstance(blocked, ExecutionBlocker)
        assert "FateZero Load Attention Store" in blocked.message and "Save Latent" in blocked.message


def rewrite_metadata(path, change):
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    info = json.loads(header["__metadata__"]["fatezero_store"])
    change(info)
    header["__metadata__"]["fatezero_store"] = json.dumps(info)
    new = json.dumps(header).encode()
    new += b" " * ((8 - len(new) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])


@pytest.mark.parametrize("change,message", [
    (lambda i: i.update(format_version=7), "format version 7"),
    (lambda i: i.update(format_version=1), "format version 1"),
    (lambda i: i.update(format_version=0), "format version 0"),
    (lambda i: i.update(steps=7), "metadata says 7 steps"),
    (lambda i: i.update(frames=5), "5 frames"),
])
def test_tampered_or_other_version_files_are_refused(comfy_nodes, store, folders, change, message):
    name = save(comfy_nodes, store)
    rewrite_metadata(folders / name, change)
    with pytest.raises(ValueError) as e:
        load(comfy_nodes, name)
    assert "FateZero Load Attention Store" in str(e.value) and "store_file" in str(e.value)
    assert message in str(e.value)


def test_truncated_file_is_refused(comfy_nodes, store, folders):
    name = save(comfy_nodes, store)
    path = folders / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="FateZero Load Attention Store: 'store_file' .* cannot be used"):
        load(comfy_nodes, name)


@pytest.mark.parametrize("name", ["output/../../etc/passwd", "output/fatezero/../../x.safetensors", "/etc/passwd",
                                  "models/x.safetensors"])
def test_names_outside_the_folders_are_refused(comfy_nodes, folders, name):
    with pytest.raises(ValueError, match="FateZero Load Attention Store: 'store_file'"):
        load(comfy_nodes, name)


def test_save_prefix_cannot_escape(comfy_nodes, store, folders):
    with pytest.raises(ValueError, match="filename_prefix"):
        save(comfy_nodes, store, prefix="../../outside/jeep")
    assert not (folders.parent / "outside").exists()
