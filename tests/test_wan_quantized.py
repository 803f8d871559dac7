"""FateZero on quantized Wan (issue 33): GGUF through ComfyUI-GGUF and fp8 through the core loader.

The tests' tiny random Wan 2.1 (``wan_models``) written as the files Wan users load
(``models_wan_quantized``), each loaded by the loader users use for it:
- ``Q8_0``, ``Q4_K``: GGUF files, loaded by the real ``UnetLoaderGGUF`` of city96/ComfyUI-GGUF
  (unpacked into the host's custom_nodes by scripts/setup_host.sh, loaded by ComfyUI's own
  custom-node loader);
- ``fp8_scaled``: ``float8_e4m3fn`` weights with per-tensor ``scale_weight`` and the ``scaled_fp8``
  marker (Comfy-Org's ``*_fp8_scaled`` files), loaded by the core ``UNETLoader``;
- ``fp8_layers``: the same weights in ComfyUI's per-layer ``_quantization_metadata`` format,
  which ``UNETLoader`` loads as ``QuantizedTensor`` (as newer ComfyUI loads every scaled-fp8 file).
On each:
- the loader really gives quantized weights;
- the store's weight fingerprint samples the stored data, without dequantizing;
- inversion and the fused edit run on the quantized MODEL, and the fusion changes the edit;
- every fusion fraction 0 is plain sampling of the same quantized MODEL, bit for bit;
- the same file loaded again with a saved store loaded back edits without a false "weights
  differ", bit for bit as the in-memory store does, while another format of the same model
  (another quantization, the fp16 file) is refused by name.
And a LoRA on the GGUF MODEL (ComfyUI-GGUF patches quantized weights when they dequantize) and
on the scaled-fp8 MODEL reaches the inversion and the edit; fractions 0 stay plain sampling.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

import host
import models_wan_quantized
from test_wan import SRC, SWAP, encode, fuse, invert, sample, video  # noqa: F401 (encode: a fixture)

GGUF_PACK = "ComfyUI-GGUF"
KINDS = ("Q8_0", "Q4_K", "fp8_scaled", "fp8_layers")
REFUSED = "not the MODEL the attention store was inverted with"


@pytest.fixture(scope="session")
def gguf_nodes(comfy_nodes) -> dict:
    """ComfyUI-GGUF's nodes as ComfyUI loads a custom-node pack (``nodes.load_custom_node`` on
    the host's ``custom_nodes/ComfyUI-GGUF``). A missing pack fails the tests: it is part of the host."""
    folder = host.comfyui_path() / "custom_nodes" / GGUF_PACK
    if not (folder / "__init__.py").exists():
        raise RuntimeError(f"{folder} is missing: run scripts/setup_host.sh (it unpacks ComfyUI-GGUF from "
                           "../shared/third_party and installs its gguf dependency)")
    if "UnetLoaderGGUF" not in comfy_nodes.NODE_CLASS_MAPPINGS:
        if not asyncio.run(comfy_nodes.load_custom_node(str(folder))):
            raise RuntimeError(f"ComfyUI could not load {folder} (is the gguf package installed?)")
    return comfy_nodes.NODE_CLASS_MAPPINGS


@pytest.fixture(scope="session")
def quantized_files(wan_files) -> dict[str, str]:
    """The quantized files by kind -> file name, next to the tiny Wan in diffusion_models/
    (the folder ``wan_files`` registered; ComfyUI-GGUF lists its .gguf files from there)."""
    import folder_paths
    source = Path(folder_paths.get_full_path("diffusion_models", wan_files["wan21"]))
    folder = source.parent
    files = {q: models_wan_quantized.wan21_gguf(folder, source, q).name for q in ("Q8_0", "Q4_K")}
    files["fp8_scaled"] = models_wan_quantized.wan21_fp8_scaled(folder, source).name
    files["fp8_layers"] = models_wan_quantized.wan21_fp8_layers(folder, source).name
    return files


def load(kind: str, gguf_nodes, quantized_files):
    """The MODEL of ``kind`` through the loader users use for it."""
    if kind.startswith("fp8"):
        return gguf_nodes["UNETLoader"]().load_unet(quantized_files[kind], "default")[0]
    return gguf_nodes["UnetLoaderGGUF"]().load_unet(quantized_files[kind])[0]


@pytest.fixture(scope="module", params=KINDS)
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def quantized(kind, gguf_nodes, quantized_files):
    return load(kind, gguf_nodes, quantized_files)


@pytest.fixture(scope="module")
def inverted(node, quantized, encode):
    return invert(node, quantized, encode(SRC), video())


def velocity(model) -> torch.Tensor:
    """One model call on a fixed input (as the executor runs nodes, in inference mode)."""
    g = torch.Generator().manual_seed(0)
    x, context = torch.randn(1, 16, 3, 8, 8, generator=g), torch.randn(1, 512, 4096, generator=g)
    with torch.inference_mode():
        return model.model.apply_model(x, torch.tensor([0.5]), c_crossattn=context).float()


def test_the_loaders_give_quantized_weights(kind, quantized, gguf_nodes, wan_files):
    """Quantized weights that compute the fp16 model's velocity up to the format's rounding (a
    4-bit Q4_K is the coarsest: 2.6% on this model; a wrong block layout is off by 100%)."""
    fp16 = velocity(gguf_nodes["UNETLoader"]().load_unet(wan_files["wan21"], "default")[0])
    error = float((velocity(quantized) - fp16).norm() / fp16.norm())
    assert 0 < error < 0.05
    q = quantized.model.diffusion_model.blocks[0].self_attn.q
    assert type(quantized.model.model_config).__name__ == "WAN21_T2V"
    if kind == "fp8_scaled":  # ComfyUI 0.3.75's scaled_fp8_ops: a float8 weight and a scale_weight beside it
        assert q.weight.dtype == torch.float8_e4m3fn and float(q.scale_weight) != 1.0
        assert quantized.model.model_config.scaled_fp8 == torch.float8_e4m3fn
    elif kind == "fp8_layers":  # mixed_precision_ops: a QuantizedTensor holding float8 data and its scale
        assert type(q.weight).__name__ == "QuantizedTensor" and q.weight._qdata.dtype == torch.float8_e4m3fn
        assert float(q.weight._layout_params["scale"]) != 1.0
    else:
        assert type(quantized).__name__ == "GGUFModelPatcher"
        assert q.weight.tensor_type.name == kind and tuple(q.weight.shape) == (128, 128)


def test_the_weight_fingerprint_reads_what_is_stored(pack, kind, quantized, monkeypatch):
    """The store's fingerprint samples a quantized weight's stored data and scales, never its
    dequantized values (a 14B model's every weight dequantized once per edit, and ComfyUI's
    QuantizedTensor logs each fallback)."""
    import comfy.quant_ops
    model_state = pack.fatezero_attn.store.model_state
    want = model_state.weights_digest(quantized)

    def refuse(*args, **kwargs):
        raise AssertionError("the fingerprint dequantized a weight")
    monkeypatch.setattr(comfy.quant_ops.QuantizedTensor, "dequantize", refuse)
    monkeypatch.setattr(comfy.quant_ops.QuantizedTensor, "_dequant_and_fallback", classmethod(refuse))
    assert model_state.weights_digest(quantized) == want


def test_inversion_and_fusion_run_on_the_quantized_model(node, wan_clip, encode, quantized, inverted):
    latent, store, sigmas, noise, split = inverted
    assert store.info.model_family == "WAN21" and bool(torch.isfinite(latent["samples"]).all())
    target, negative = encode(SWAP), encode("")
    edit = sample(node, fuse(node, quantized, store, wan_clip, SWAP), target, negative, inverted)
    plain = sample(node, quantized, target, negative, inverted)
    assert bool(torch.isfinite(edit).all()) and not torch.equal(edit, plain)


def test_replace_fractions_zero_is_plain_sampling_bit_for_bit(node, wan_clip, encode, quantized, inverted):
    target, negative = encode(SWAP), encode("")
    fused = fuse(node, quantized, inverted[1], wan_clip, SWAP, 0.0, 0.0)
    assert torch.equal(sample(node, fused, target, negative, inverted),
                       sample(node, quantized, target, negative, inverted))


def test_the_same_file_loaded_again_and_a_saved_store_edit_as_the_store_in_memory(
        node, kind, wan_clip, encode, quantized, inverted, gguf_nodes, quantized_files):
    """No false "weights differ": a second load of the same file (ComfyUI reloads a model when its
    loader's inputs change back, or in another run), then the store saved and loaded back."""
    target, negative = encode(SWAP), encode("")
    want = sample(node, fuse(node, quantized, inverted[1], wan_clip, SWAP), target, negative, inverted)
    again = load(kind, gguf_nodes, quantized_files)
    assert again.model is not quantized.model
    name = node("FateZeroSaveAttentionStore").save(inverted[1], f"fatezero/test-wan-{kind}", "temp")["result"][0]
    store, latent, sigmas, noise, split = node("FateZeroLoadAttentionStore").load(name)
    got = sample(node, fuse(node, again, store, wan_clip, SWAP), target, negative, (latent, store, sigmas, noise))
    assert torch.equal(got, want)


def test_other_formats_of_the_model_are_refused(node, kind, wan_clip, inverted, gguf_nodes, quantized_files,
                                                wan_files):
    """The same random model in another format (another quantization, or the fp16 file) has other
    stored weights: refused by name."""
    for other in [k for k in KINDS if k != kind] + ["fp16"]:
        model = (gguf_nodes["UNETLoader"]().load_unet(wan_files["wan21"], "default")[0] if other == "fp16"
                 else load(other, gguf_nodes, quantized_files))
        with pytest.raises(ValueError, match=f"{REFUSED} \\(another model: its weights differ\\)"):
            fuse(node, model, inverted[1], wan_clip, SWAP)


@pytest.fixture(scope="module")
def quantized_lora(tmp_path_factory) -> str:
    """A random rank-4 LoRA on the blocks' attention projections (ComfyUI's generic key format)."""
    import folder_paths
    from safetensors.torch import save_file
    folder = tmp_path_factory.mktemp("wan_quantized_loras")
    g = torch.Generator().manual_seed(7)
    sd = {}
    for i in range(2):  # the tiny Wan's blocks
        for layer in ("self_attn.q", "self_attn.k", "cross_attn.q", "cross_attn.o"):
            sd[f"diffusion_model.blocks.{i}.{layer}.lora_down.weight"] = torch.randn(4, 128, generator=g) * 0.1
            sd[f"diffusion_model.blocks.{i}.{layer}.lora_up.weight"] = torch.randn(128, 4, generator=g) * 0.1
    save_file(sd, str(folder / "wan_tiny_lora_q.safetensors"))
    folder_paths.add_model_folder_path("loras", str(folder))
    return "wan_tiny_lora_q.safetensors"


@pytest.mark.parametrize("lora_kind", ["Q4_K", "fp8_scaled"])
def test_a_lora_on_the_quantized_model_composes(node, lora_kind, wan_clip, encode, gguf_nodes, quantized_files,
                                                quantized_lora):
    """ComfyUI-GGUF keeps a LoRA on a quantized weight as a patch applied when the layer
    dequantizes; scaled fp8 patches the float8 weight in place (the original kept in the
    patcher's backup). Either way the inversion and the fused edit see it, fractions 0 stay plain
    sampling, and the model without the LoRA is refused."""
    base = load(lora_kind, gguf_nodes, quantized_files)
    with torch.inference_mode():  # as ComfyUI's executor runs nodes (its fp8 LoRA rounding writes with out=)
        lora = node("LoraLoaderModelOnly").load_lora_model_only(base, quantized_lora, 1.0)[0]
        source, target, negative = encode(SRC), encode(SWAP), encode("")
        inv = invert(node, lora, source, video())
        plain = sample(node, lora, target, negative, inv)
        assert not torch.equal(plain, sample(node, base, target, negative, inv))  # the LoRA acts
        zero = fuse(node, lora, inv[1], wan_clip, SWAP, 0.0, 0.0)
        assert torch.equal(sample(node, zero, target, negative, inv), plain)
        edit = sample(node, fuse(node, lora, inv[1], wan_clip, SWAP), target, negative, inv)
        assert bool(torch.isfinite(edit).all()) and not torch.equal(edit, plain)
        with pytest.raises(ValueError, match=REFUSED):
            fuse(node, base, inv[1], wan_clip, SWAP)
