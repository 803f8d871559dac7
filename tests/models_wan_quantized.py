"""The tests' tiny random Wan 2.1 as the quantized files Wan users load: GGUF and scaled fp8.

- ``wan21_gguf(folder, source, qtype)``: the tiny Wan's diffusion-model file written as a GGUF
  file with the ``gguf`` package, laid out as ComfyUI-GGUF's ``tools/convert.py`` (plus its
  ``fix_5d_tensors.py`` and a llama.cpp quantize) lays out a Wan file: architecture ``"wan"``,
  the plain ``WanModel`` tensor names, one-dimensional tensors, tensors of at most 1024 values
  and the ``.modulation`` tables in F32, the 5-D patch embedding in F32, every other weight in
  ``qtype`` (``Q8_0`` or ``Q4_K``). ``UnetLoaderGGUF`` (city96/ComfyUI-GGUF) loads it.
  Q8_0 is quantized by ``gguf.quants``; the ``gguf`` package has no Q4_K quantizer (only its
  dequantizer), so ``q4_k_blocks`` packs Q4_K blocks here and the file is checked against
  ``gguf.quants.dequantize``. Q4_K blocks hold 256 values: a weight whose rows are not a
  multiple of 256 is stored as rows of 256 with its shape in ``comfy.gguf.orig_shape.<name>``,
  the key ``convert.py`` writes for such weights and the loader reads.
- ``wan21_fp8_scaled(folder, source)``: the same model as ComfyUI's ``*_fp8_scaled`` files
  (Comfy-Org's Wan repackages): every linear weight in ``float8_e4m3fn`` divided by a per-tensor
  ``<layer>.scale_weight`` (float32, the weight's absolute maximum over 448), the ``scaled_fp8``
  marker tensor (two ``float8_e4m3fn`` values: weights only, no input scales, matrix products in
  the compute dtype), everything else in fp16. ComfyUI 0.3.75
  loads this with ``comfy.ops.scaled_fp8_ops``; newer ComfyUI converts the same keys to its
  per-layer ``comfy_quant`` / ``weight_scale`` format on load (``comfy.utils.convert_old_quants``).

- ``wan21_fp8_layers(folder, source)``: the same fp8 weights in ComfyUI's per-layer format (0.3.7x's
  "mixed precision" files): ``<layer>.weight_scale`` beside each fp8 weight and the header entry
  ``_quantization_metadata`` (``{"layers": {<layer>: {"format": "float8_e4m3fn"}}}``). ComfyUI
  0.3.75 loads these weights as ``comfy.quant_ops.QuantizedTensor`` (the weight type newer
  ComfyUI gives every scaled-fp8 file, the one above included).

All are built from the fp16 file ``wan_models.wan21_diffusion_model`` writes, as a user
converts a released file, and are bit-identical from build to build.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

FORMAT = 1  # bump when a builder changes

# convert.py's thresholds: tensors this small stay in F32, and names that must keep full precision.
QUANTIZATION_THRESHOLD = 1024
HIGH_PRECISION = (".modulation",)
FP8_MAX = 448.0  # largest finite float8_e4m3fn


def _load(source: str | os.PathLike) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    return load_file(str(source))


def _replace(tmp: Path, path: Path) -> Path:
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- GGUF


def q4_k_blocks(rows: np.ndarray) -> np.ndarray:
    """Q4_K blocks (llama.cpp's layout, which ``gguf.quants`` and ComfyUI-GGUF dequantize) of
    ``rows`` ``[n, 256 k]``: per 256 values an fp16 scale ``d`` and min ``dmin``, 8 six-bit
    sub-block scales and mins packed in 12 bytes, then 4-bit values of the 8 sub-blocks of 32,
    two sub-blocks per 32 bytes (low nibble, high nibble). Value = d * sc * q - dmin * m.
    A plain min/max fit per sub-block (no error search as llama.cpp's): good enough for a
    random test model; the file format is what matters."""
    blocks = rows.astype(np.float32).reshape(-1, 8, 32)
    n = blocks.shape[0]
    lo = np.minimum(blocks.min(-1), 0.0)                      # [n, 8]: every sub-block's min (<= 0)
    scale = (blocks.max(-1) - lo) / 15.0                      # [n, 8]
    d = (scale.max(-1) / 63.0).astype(np.float16)             # [n]
    dmin = ((-lo).max(-1) / 63.0).astype(np.float16)
    with np.errstate(divide="ignore", invalid="ignore"):
        d32, dmin32 = d.astype(np.float32)[:, None], dmin.astype(np.float32)[:, None]
        sc = np.where(d32 > 0, np.rint(scale / d32), 0).clip(0, 63).astype(np.uint8)
        mn = np.where(dmin32 > 0, np.rint(-lo / dmin32), 0).clip(0, 63).astype(np.uint8)
        step = (d32 * sc)[..., None]   # [n, 8, 1]
        offset = (dmin32 * mn)[..., None]
        q = np.where(step > 0, np.rint((blocks + offset) / step), 0).clip(0, 15).astype(np.uint8)
    packed = np.empty((n, 12), np.uint8)
    packed[:, 0:4] = (sc[:, :4] & 0x3F) | ((sc[:, 4:] >> 4) << 6)
    packed[:, 4:8] = (mn[:, :4] & 0x3F) | ((mn[:, 4:] >> 4) << 6)
    packed[:, 8:12] = (sc[:, 4:] & 0x0F) | ((mn[:, 4:] & 0x0F) << 4)
    q = q.reshape(n, 4, 2, 32)
    qs = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(n, 128)
    return np.concatenate([d.reshape(n, 1).view(np.uint8), dmin.reshape(n, 1).view(np.uint8), packed, qs], axis=1)


def _quantize(data: np.ndarray, qtype) -> np.ndarray:
    """``data`` as ``qtype`` bytes (``[..., bytes per row]``); ``gguf.QuantError`` if its rows do not fit."""
    import gguf

    if qtype == gguf.GGMLQuantizationType.Q4_K:
        if data.shape[-1] % 256:
            raise gguf.QuantError(f"Q4_K needs rows of 256 values, not {data.shape}")
        blocks = q4_k_blocks(data.reshape(-1, 256))
        return blocks.reshape(*data.shape[:-1], data.shape[-1] // 256 * blocks.shape[-1])
    return gguf.quants.quantize(data, qtype)


def _gguf_type(key: str, data: np.ndarray, qtype):
    """The type convert.py (and a quantize after it) gives a tensor: small, 1-D and 5-D tensors
    and the modulation tables in F32, the rest in ``qtype``."""
    import gguf

    if data.ndim <= 1 or data.ndim > 4 or data.size <= QUANTIZATION_THRESHOLD or any(h in key for h in HIGH_PRECISION):
        return gguf.GGMLQuantizationType.F32
    return qtype


def wan21_gguf(folder: str | os.PathLike, source: str | os.PathLike, qtype: str = "Q8_0",
               name: str | None = None) -> Path:
    """Write ``folder/name`` (default ``wan21_tiny_t2v-<qtype>.gguf``): the diffusion-model file
    ``source`` quantized to ``qtype`` ("Q8_0" or "Q4_K") in ComfyUI-GGUF's Wan layout (see the
    module docstring). A weight ``qtype`` cannot hold as it is (rows not a multiple of the block)
    is stored as rows of 256 with ``comfy.gguf.orig_shape``, else in F16 (convert.py's fallback).
    Returns the path; checks that every quantized tensor reads back through ``gguf.quants``."""
    import gguf

    wanted = gguf.GGMLQuantizationType[qtype]
    path = Path(folder) / (name or f"wan21_tiny_t2v-{qtype}.gguf")
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(path=None, arch="wan")
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if qtype == "Q8_0" else gguf.LlamaFileType.MOSTLY_Q4_K_M)
    for key, tensor in sorted(_load(source).items()):
        data = tensor.float().numpy()
        ttype = _gguf_type(key, data, wanted)
        if ttype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(key, data.astype(np.float32), raw_dtype=ttype)
            continue
        shape = data.shape
        if shape[-1] % gguf.GGML_QUANT_SIZES[ttype][0] and data.size % 256 == 0:
            writer.add_array(f"comfy.gguf.orig_shape.{key}", [int(s) for s in shape])
            data = data.reshape(-1, 256)
        try:
            raw = _quantize(data, ttype)
        except gguf.QuantError:
            ttype, raw = gguf.GGMLQuantizationType.F16, data.astype(np.float16)
        check = gguf.quants.dequantize(raw, ttype).reshape(shape)
        if not np.isfinite(check).all() or np.abs(check - tensor.float().numpy()).max() > np.abs(data).max() / 4:
            raise RuntimeError(f"{key} does not read back as {ttype.name}")
        writer.add_tensor(key, raw, raw_dtype=ttype)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.partial")
    writer.write_header_to_file(path=str(tmp))
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return _replace(tmp, path)


def gguf_types(path: str | os.PathLike) -> dict[str, str]:
    """Tensor name -> GGML type name of a GGUF file (what the loader will see)."""
    import gguf
    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors}


# --------------------------------------------------------------------------- scaled fp8


def _is_linear_weight(key: str, tensor: torch.Tensor) -> bool:
    """A ``Linear`` layer's weight of ``WanModel`` (2-D ``*.weight``): what scaled-fp8 files hold in fp8."""
    return key.endswith(".weight") and tensor.ndim == 2


def _fp8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` as float8_e4m3fn of ``weight / scale`` and its per-tensor float32 ``scale``."""
    w = weight.float()
    scale = (w.abs().max() / FP8_MAX).clamp(min=torch.finfo(torch.float32).tiny)
    return (w / scale).to(torch.float8_e4m3fn).contiguous(), scale.reshape(()).to(torch.float32)


def _save(path: Path, sd: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Save through a temporary file and an atomic rename (a loader never sees half a file)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.partial")
    save_file(sd, str(tmp), metadata={"fatezero_test_model": f"random weights, not a real model (fp8 {FORMAT})",
                                      **(metadata or {})})
    return _replace(tmp, path)


def wan21_fp8_scaled(folder: str | os.PathLike, source: str | os.PathLike,
                     name: str = "wan21_tiny_t2v_fp8_scaled.safetensors") -> Path:
    """Write ``folder/name``: ``source`` with every linear weight as ``float8_e4m3fn`` of
    ``weight / scale`` and ``<layer>.scale_weight`` = ``scale`` (float32 scalar, absolute max /
    448), the ``scaled_fp8`` marker (ComfyUI reads the weight dtype from it; two elements mean
    no ``scale_input`` and full-precision matrix products), everything else fp16: the layout of
    Comfy-Org's ``*_fp8_scaled`` Wan files."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in sorted(_load(source).items()):
        if _is_linear_weight(key, tensor):
            out[key], out[key[:-len("weight")] + "scale_weight"] = _fp8(tensor)
        else:
            out[key] = tensor.to(torch.float16).contiguous()
    out["scaled_fp8"] = torch.zeros(2, dtype=torch.float8_e4m3fn)
    return _save(Path(folder) / name, out)


def wan21_fp8_layers(folder: str | os.PathLike, source: str | os.PathLike,
                     name: str = "wan21_tiny_t2v_fp8_layers.safetensors") -> Path:
    """Write ``folder/name``: the weights of ``wan21_fp8_scaled`` in ComfyUI's per-layer quantization
    format: ``<layer>.weight`` float8_e4m3fn, ``<layer>.weight_scale`` float32, the layer list in
    the ``_quantization_metadata`` header entry, no ``scaled_fp8`` marker."""
    import json

    out: dict[str, torch.Tensor] = {}
    layers: dict[str, dict[str, str]] = {}
    for key, tensor in sorted(_load(source).items()):
        if _is_linear_weight(key, tensor):
            layer = key[:-len(".weight")]
            out[key], out[f"{layer}.weight_scale"] = _fp8(tensor)
            layers[layer] = {"format": "float8_e4m3fn"}
        else:
            out[key] = tensor.to(torch.float16).contiguous()
    meta = json.dumps({"format_version": "1.0", "layers": layers}, sort_keys=True)
    return _save(Path(folder) / name, out, {"_quantization_metadata": meta})
