"""Saving and loading the attention store through the real nodes and ComfyUI's folders."""
from __future__ import annotations

import json
import struct

import pytest
import torch


@pytest.fixture(scope="module")
def store(comfy_nodes, tiny_model):
    g = torch.Generator().manual_seed(1)
    cond = [[torch.randn(1, 77, 768, generator=g), {}]]
    latent = {"samples": torch.randn(2, 4, 16, 16, generator=g) * 5}
    node = comfy_nodes.NODE_CLASS_MAPPINGS["FateZeroDDIMInversion"]()
    return node.invert(tiny_model, cond, latent, 3, "middle", 0, True, "alphas_cumprod[0] (authors)")[1]


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
