"""Save and load the attention store as safetensors in ComfyUI's output or temp folder."""
from __future__ import annotations

import os
from pathlib import Path

import folder_paths

from ..fatezero_attn.errors import FateZeroError
from ..fatezero_attn.inversion.flow import InvertedNoise
from ..fatezero_attn.store.store_file import load_store, save_store
from . import CATEGORY
from .common import STORE_TYPE

SUBFOLDER = "fatezero"


def _roots() -> dict[str, Path]:
    return {"output": Path(folder_paths.get_output_directory()), "temp": Path(folder_paths.get_temp_directory())}


def store_files() -> list[str]:
    """``output/fatezero/...`` and ``temp/fatezero/...`` store files, as '<root>/<relative path>'."""
    names = []
    for root_name, root in _roots().items():
        folder = root / SUBFOLDER
        if folder.is_dir():
            names += sorted(f"{root_name}/{p.relative_to(root).as_posix()}" for p in folder.rglob("*.safetensors"))
    return names


def resolve(name: str, node: str, input_name: str) -> Path:
    """'output/fatezero/x.safetensors' -> a path that must stay inside that root."""
    root_name, _, rel = name.partition("/")
    roots = _roots()
    if root_name not in roots or not rel:
        raise FateZeroError(f"{node}: '{input_name}' must start with 'output/' or 'temp/' (got '{name}').")
    root = roots[root_name].resolve()
    path = (root / rel).resolve()
    if os.path.commonpath([root, path]) != str(root):
        raise FateZeroError(f"{node}: '{input_name}' ('{name}') points outside ComfyUI's {root_name} folder; refused.")
    return path


class FateZeroSaveAttentionStore:
    DESCRIPTION = "Writes the attention store to a safetensors file in ComfyUI's output (or temp) folder, so an inversion can be reused later or elsewhere."
    CATEGORY = CATEGORY
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("store_file",)
    OUTPUT_TOOLTIPS = ("The saved file's name, as FateZero Load Attention Store lists it.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "attention_store": (STORE_TYPE, {"tooltip": "From FateZero DDIM Inversion."}),
            "filename_prefix": ("STRING", {"default": "fatezero/store", "tooltip": "Name under the output folder; a counter is added, nothing is overwritten. Must stay inside the folder."}),
            "folder": (["output", "temp"], {"default": "output", "tooltip": "output keeps the file; temp is cleared when ComfyUI restarts."}),
        }, "optional": {
            "source_cache": ("BOOLEAN", {"default": True, "tooltip": "For a store inverted with store_mode cache: also write its source cache (its size is logged at inversion; the loaded store then edits as fast). Off writes the small recompute store."}),
        }}

    def save(self, attention_store, filename_prefix, folder, source_cache=True):
        node = "FateZero Save Attention Store"
        if not filename_prefix.startswith(SUBFOLDER + "/"):
            filename_prefix = f"{SUBFOLDER}/{filename_prefix}"
        root = _roots()[folder]
        try:
            full_folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, str(root))
        except Exception as e:  # ComfyUI refuses prefixes that leave the folder
            raise FateZeroError(f"{node}: 'filename_prefix' ('{filename_prefix}') is not usable: {e}") from None
        path = resolve(f"{folder}/{Path(subfolder, f'{filename}_{counter:05}_.safetensors').as_posix()}", node, "filename_prefix")
        os.makedirs(path.parent, exist_ok=True)
        save_store(attention_store if source_cache else attention_store.without_cache(), path)
        name = f"{folder}/{path.relative_to(root.resolve()).as_posix()}"
        return {"ui": {"text": [name]}, "result": (name,)}


class FateZeroLoadAttentionStore:
    DESCRIPTION = "Reads an attention store saved by FateZero Save Attention Store; checks its format and contents."
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (STORE_TYPE, "LATENT", "SIGMAS", "NOISE", "INT")
    RETURN_NAMES = ("attention_store", "inverted_latent", "edit_sigmas", "inverted_noise", "expert_split_step")
    OUTPUT_TOOLTIPS = (
        "Connect to FateZero Blend Mask and FateZero Attention Fusion (with the same MODEL).",
        "The inversion's inverted_latent, kept in the file: the sampler's latent_image.",
        "The inversion's edit_sigmas: the sampler's sigmas.",
        "The inversion's inverted_noise (Wan: SamplerCustomAdvanced's noise; SD: zero noise).",
        "The inversion's expert_split_step (Wan 2.2 A14B: SplitSigmas' step; 0 otherwise).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "store_file": (store_files() or ["(no store saved yet)"], {"tooltip": "A store under output/fatezero or temp/fatezero."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, store_file):
        return True  # the list changes as stores are saved; load() checks the name

    @classmethod
    def IS_CHANGED(cls, store_file):
        try:
            st = resolve(store_file, "", "").stat()
            return f"{st.st_mtime_ns}-{st.st_size}"
        except (OSError, FateZeroError):
            return store_file

    def load(self, store_file):
        node = "FateZero Load Attention Store"
        path = resolve(store_file, node, "store_file")
        if not path.is_file():
            raise FateZeroError(f"{node}: 'store_file' {store_file} does not exist; save a store first or pick one from the list.")
        try:
            store = load_store(path)
        except ValueError as e:
            raise FateZeroError(f"{node}: 'store_file' {store_file} cannot be used: {e}.") from None
        if store.inverted_latent is None:  # saved by an older version: only the store itself can be used
            from comfy_execution.graph import ExecutionBlocker
            latent = noise = ExecutionBlocker(
                f"{node}: {store_file} was saved by an older version of the pack and holds no inverted latent. Use "
                "the latent you kept with Save Latent, or run FateZero DDIM Inversion again and save its store.")
        else:
            latent = {"samples": store.inverted_latent.clone()}
            noise = InvertedNoise(store.inverted_noise)
        return store, latent, store.sampler_sigmas(), noise, store.expert_split_step()


NODE_CLASS_MAPPINGS = {"FateZeroSaveAttentionStore": FateZeroSaveAttentionStore,
                       "FateZeroLoadAttentionStore": FateZeroLoadAttentionStore}
NODE_DISPLAY_NAME_MAPPINGS = {"FateZeroSaveAttentionStore": "FateZero Save Attention Store",
                              "FateZeroLoadAttentionStore": "FateZero Load Attention Store"}
