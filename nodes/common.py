"""Helpers shared by the node families: the CLIP tokenizer, prompt checks, word lists."""
from __future__ import annotations

import hashlib

import torch

from ..fatezero_attn import model_family, model_state
from ..fatezero_attn.alignment import MAX_TOKENS, flatten, word_positions
from ..fatezero_attn.errors import FateZeroError
from ..fatezero_attn.store import AttentionStore

STORE_TYPE = "FATEZERO_STORE"
BLEND_TYPE = "FATEZERO_BLEND"


CLIP_TOKENIZERS = ("clip_l", "clip_g", "clip_h")  # SD1: L; SD2: OpenCLIP-H; SDXL: L and G


def hf_tokenizers(clip, node: str) -> dict:
    """The HuggingFace tokenizers inside ComfyUI's CLIP object, by name (SDXL has two)."""
    found = {name: getattr(clip.tokenizer, name).tokenizer for name in CLIP_TOKENIZERS
             if hasattr(getattr(clip.tokenizer, name, None), "tokenizer")}
    if not found:
        raise FateZeroError(f"{node}: 'clip' has no CLIP-L, OpenCLIP-H or CLIP-G tokenizer "
                            f"({type(clip.tokenizer).__name__}); FateZero supports SD1.x, SD2.x and SDXL checkpoints. "
                            "Connect the checkpoint's own CLIP.")
    return found


def prompt_words(clip, text: str, node: str, input_name: str) -> tuple[list[str], list[list[int]]]:
    """Words of ``text`` and their token ids (no BOS/EOS), checked against the 75-token window.
    With several text encoders (SDXL) their tokens must line up, position for position."""
    words = text.split()
    if not words:
        raise FateZeroError(f"{node}: '{input_name}' is empty; type the prompt the video is described (or edited) with.")
    toks = hf_tokenizers(clip, node)
    tok = next(iter(toks.values()))
    tokens = [tok(w, add_special_tokens=False)["input_ids"] for w in words]
    if len(flatten(tokens)) > MAX_TOKENS - 2:
        raise FateZeroError(too_long(node, input_name, f"has {len(flatten(tokens))} tokens"))
    if len(toks) > 1:
        check_encoders_line_up(clip, text, len(flatten(tokens)) + 2, node, input_name)
    return words, tokens


def check_encoders_line_up(clip, text: str, span: int, node: str, input_name: str) -> None:
    """What ComfyUI itself feeds each text encoder (embeddings included) has the same token at
    every position of the prompt (``span``: BOS, the words' tokens, EOS); a word one tokenizer
    splits otherwise shifts every later position, so this covers word tokens too."""
    encoded = clip.tokenize(text)
    rows = {name: [t[0] if isinstance(t[0], int) else "embedding" for t in batches[0][:span]]
            for name, batches in encoded.items()}
    if len({tuple(r) for r in rows.values()}) > 1:
        raise FateZeroError(f"{node}: '{input_name}' reaches the text encoders ({', '.join(rows)}) with different "
                            "tokens at the same positions (a word tokenized otherwise, an embedding with another "
                            "vector count per encoder, or a custom tokenizer), so their 77 positions do not line up; FateZero maps attention by "
                            "position. Use an embedding made for this checkpoint, or leave it out.")


def too_long(node: str, input_name: str, what: str) -> str:
    return (f"{node}: '{input_name}' {what}; FateZero maps attention within one CLIP window of {MAX_TOKENS - 2} "
            "tokens. Shorten the prompt.")


def positions_of(words: list[str], tokens: list[list[int]], wanted: str, node: str, input_name: str,
                 prompt_name: str) -> list[int]:
    pos = word_positions(words, tokens, wanted)
    if not pos:
        raise FateZeroError(f"{node}: '{wanted}' in '{input_name}' is not a word of the {prompt_name} "
                            f"('{' '.join(words)}'); use words exactly as they appear there.")
    return pos


def parse_word_values(text: str, node: str, input_name: str, lo: float, hi: float) -> dict[str, float]:
    """``"watercolor:10, van gogh:5"`` -> ``{"watercolor": 10.0, "van gogh": 5.0}``."""
    out: dict[str, float] = {}
    for item in filter(None, (s.strip() for s in text.replace("\n", ",").split(","))):
        word, sep, value = item.rpartition(":")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or not word.strip() or number is None:
            raise FateZeroError(f"{node}: '{item}' in '{input_name}' is not 'word:number'; write e.g. 'watercolor:10'.")
        if not lo <= number <= hi:
            raise FateZeroError(f"{node}: {number} for '{word.strip()}' in '{input_name}' is outside {lo}..{hi}.")
        out[word.strip()] = number
    return out


def context_sha1(context: torch.Tensor) -> str:
    return hashlib.sha1(context.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def check_source_prompt(clip, text: str, store: AttentionStore, node: str) -> None:
    """The source prompt typed here must be the one the store was inverted with."""
    encoded = clip.encode_from_tokens(clip.tokenize(text))
    ref = store.source_context.to(encoded)
    if encoded.shape != ref.shape or (encoded - ref).abs().max() > 1e-3 * max(1.0, float(ref.abs().max())):
        raise FateZeroError(f"{node}: 'source_prompt' ('{text}') is not the prompt the attention store was inverted "
                            "with; connect the same text that feeds the inversion's source CLIPTextEncode.")


def check_store_model(store: AttentionStore, model, node: str) -> None:
    """The MODEL must compute the inversion's UNet call as the inversion's MODEL did."""
    family = model_family.family_of(model)
    if family is None or family.name != store.info.model_family:
        raise FateZeroError(
            f"{node}: 'model' is {'not an SD UNet' if family is None else 'an ' + family.name + ' model'} and the "
            f"attention store was inverted with an {store.info.model_family} model; attention cannot be fused across "
            "model families. Connect the MODEL of the checkpoint the store was inverted with, or invert again with "
            "this one.")
    parts = model_state.describe(model)
    if store.info.model_id == model_state.digest(parts):
        return
    diffs = model_state.differences(store.info.model_parts, parts)
    what = "another model: its weights differ" if any(d.startswith("weights") for d in diffs) else \
        "its patches differ"
    raise FateZeroError(
        f"{node}: 'model' is not the MODEL the attention store was inverted with ({what}), so the source row "
        f"would not repeat the inversion. Differs in: {'; '.join(diffs)}. Connect the same MODEL (same checkpoint, "
        "LoRAs and model patches) to FateZero DDIM Inversion and to this node; patches meant only for the edit "
        "(e.g. FreeU, SAG, PAG) go on this node's output MODEL.")


def check_store_conditioning(store: AttentionStore, node: str, fused_steps: int) -> None:
    """A store whose source row needs the inversion's ControlNet must still have it (unless cached)."""
    recomputes = not store.has_cache or fused_steps > store.info.cache_steps
    kept = store.extra.get("source_control") is not None or store.extra.get("window_controls") is not None
    if store.info.source_control and not kept and recomputes:
        raise FateZeroError(
            f"{node}: 'attention_store' was inverted with a ControlNet or T2I-Adapter on its source_conditioning and "
            "comes from a file, which cannot carry the ControlNet the source row must replay. Connect FateZero DDIM "
            "Inversion's attention_store output directly; or invert with store_mode cache and cache_replace_steps at least "
            "this node's replace steps (the cache needs no ControlNet), or with the plain CLIPTextEncode of the source "
            "prompt and ControlNet applied to the sampler's positive and negative.")
