"""Helpers shared by the node families: the CLIP tokenizer, prompt checks, word lists."""
from __future__ import annotations

import hashlib

import torch

from ..fatezero_attn.edit.alignment import CLIP_WINDOW, UMT5_WINDOW, TextWindow, flatten, word_positions
from ..fatezero_attn.errors import FateZeroError
from ..fatezero_attn.families import family_of
from ..fatezero_attn.store import model_state
from ..fatezero_attn.store.attention_store import AttentionStore

STORE_TYPE = "FATEZERO_STORE"
BLEND_TYPE = "FATEZERO_BLEND"
# inputs the store-reading nodes share
STORE_INPUT = (STORE_TYPE, {"tooltip": "From FateZero DDIM Inversion or FateZero Load Attention Store."})
CLIP_INPUT = ("CLIP", {"tooltip": "The checkpoint's CLIP (for Wan: CLIPLoader type wan), used to find the words' "
                                  "token positions."})
SOURCE_PROMPT_INPUT = ("STRING", {"multiline": True, "default": "",
                                  "tooltip": "The source prompt exactly as encoded for the inversion."})


CLIP_TOKENIZERS = ("clip_l", "clip_g", "clip_h")  # SD1: L; SD2: OpenCLIP-H; SDXL: L and G


def umt5_tokenizer(clip):
    """ComfyUI's umT5 tokenizer inside a Wan CLIP (``WanT5Tokenizer.clip_umt5xxl``), or None."""
    return getattr(clip.tokenizer, "clip_umt5xxl", None) or getattr(clip.tokenizer, "umt5xxl", None)


def text_window(clip) -> TextWindow:
    """The text window of the CLIP input's encoder: umT5's 512 positions (Wan) or CLIP's 77."""
    return UMT5_WINDOW if umt5_tokenizer(clip) is not None else CLIP_WINDOW


def word_tokenizer(clip, node: str):
    """``word -> token ids`` (no start or end token) with the tokenizer ComfyUI uses for this CLIP."""
    umt5 = umt5_tokenizer(clip)
    # Word by word: ComfyUI tokenizes the whole prompt, but neither SentencePiece nor CLIP's BPE
    # joins tokens across a space, so the tokens are the same (check_encoders_line_up verifies it).
    if umt5 is not None:  # SentencePiece; drop its end token
        return lambda word: umt5.tokenizer(word)["input_ids"][:-1]
    found = [getattr(clip.tokenizer, name).tokenizer for name in CLIP_TOKENIZERS
             if hasattr(getattr(clip.tokenizer, name, None), "tokenizer")]
    if not found:
        raise FateZeroError(f"{node}: 'clip' has no CLIP-L, OpenCLIP-H, CLIP-G or umT5 tokenizer "
                            f"({type(clip.tokenizer).__name__}); FateZero supports SD1.x, SD2.x, SDXL and Wan 2.1 / 2.2 "
                            "models. Connect the checkpoint's own CLIP (for Wan: CLIPLoader, type wan).")
    return lambda word: found[0](word, add_special_tokens=False)["input_ids"]


def prompt_words(clip, text: str, node: str, input_name: str) -> tuple[list[str], list[list[int]]]:
    """Words of ``text`` and their token ids (no BOS/EOS), checked against the text window.
    What ComfyUI itself feeds each text encoder must have the same tokens at the same positions."""
    words = text.split()
    if not words:
        raise FateZeroError(f"{node}: '{input_name}' is empty; type the prompt the video is described (or edited) with.")
    tokenize = word_tokenizer(clip, node)
    # ComfyUI reads \( and \) as literal brackets (plain ones are weights)
    tokens = [tokenize(w.replace("\\(", "(").replace("\\)", ")")) for w in words]
    window = text_window(clip)
    if len(flatten(tokens)) > window.max_prompt_tokens:
        raise FateZeroError(too_long(node, input_name, f"has {len(flatten(tokens))} tokens", window))
    check_encoders_line_up(clip, text, flatten(tokens), window, node, input_name)
    return words, tokens


def check_encoders_line_up(clip, text: str, tokens: list[int], window: TextWindow, node: str,
                           input_name: str) -> None:
    """What ComfyUI itself feeds each text encoder has the words' tokens, one by one, where the
    pack maps them: prompt weights (ComfyUI strips their brackets), embeddings (vectors, not
    tokens, and their count may differ per encoder) and a word one tokenizer splits otherwise
    would shift every later word."""
    end = window.start + len(tokens)
    off = [name for name, batches in clip.tokenize(text).items()
           if [t[0] if isinstance(t[0], int) else None for t in batches[0][window.start:end]] != tokens]
    if off:
        encoder = "umT5" if window == UMT5_WINDOW else "CLIP"
        raise FateZeroError(f"{node}: '{input_name}' reaches {encoder} with other tokens than its words one by one "
                            f"(encoder {', '.join(off)}: prompt weights like '(word:1.2)', an embedding or a custom "
                            "tokenizer), so FateZero cannot tell which positions are which word. Write the prompt "
                            "as plain words.")


def too_long(node: str, input_name: str, what: str, window: TextWindow = CLIP_WINDOW) -> str:
    encoder = "CLIP" if window == CLIP_WINDOW else "umT5"
    return (f"{node}: '{input_name}' {what}; FateZero maps attention within one {encoder} window of "
            f"{window.max_prompt_tokens} tokens. Shorten the prompt.")


def positions_of(words: list[str], tokens: list[list[int]], wanted: str, node: str, input_name: str,
                 prompt_name: str, start: int = 1) -> list[int]:
    pos = word_positions(words, tokens, wanted, start)
    if not pos:
        raise FateZeroError(f"{node}: '{wanted}' in '{input_name}' is not a word of the {prompt_name} "
                            f"('{' '.join(words)}'); use words exactly as they appear there.")
    return pos


def word_list(text: str) -> list[str]:
    """``"silver, jeep"`` -> ``["silver", "jeep"]`` (empty items dropped)."""
    return [w.strip() for w in text.split(",") if w.strip()]


def check_tau(tau: float, node: str) -> None:
    if not 0.0 <= tau <= 1.0:
        raise FateZeroError(f"{node}: 'tau' is {tau}; use a threshold between 0 and 1 (the authors use 0.3).")


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


# text-embedding width -> the text encoder that gives it
TEXT_ENCODERS = {768: "SD1.x's CLIP-L", 1024: "SD2.x's OpenCLIP-H", 2048: "SDXL's CLIP-L and CLIP-G",
                 4096: "umT5-XXL, Wan's"}


def encoder_of(width: int) -> str:
    return f"{width} wide, {TEXT_ENCODERS[width]}" if width in TEXT_ENCODERS else f"{width} wide"


def check_conditioning_width(context: torch.Tensor, family, model, node: str, input_name: str) -> None:
    """The conditioning must come from the MODEL's own text encoder: refused by name here rather
    than as a matrix-shape error inside the model after the inversion started."""
    widths = family.text_widths(model.model.diffusion_model)
    width = int(context.shape[-1])
    if widths and width not in widths:
        wanted = " or ".join(str(w) for w in sorted(widths))
        raise FateZeroError(f"{node}: '{input_name}' is text encoded {encoder_of(width)}; this {family.name} "
                            f"model reads text {wanted} wide. Encode the prompt with the model's own text encoder: "
                            f"{family.text_encoder}, into CLIPTextEncode.")


def check_source_prompt(clip, text: str, store: AttentionStore, node: str) -> None:
    """The source prompt typed here must be the one the store was inverted with."""
    encoded = clip.encode_from_tokens(clip.tokenize(text))
    ref = store.source_context.to(encoded)
    if encoded.shape[-1] != ref.shape[-1]:
        family = store.info.family
        raise FateZeroError(f"{node}: 'clip' encodes text {encoder_of(encoded.shape[-1])}; the attention store's "
                            f"{family.name} model was given text {encoder_of(ref.shape[-1])}. Connect the CLIP that "
                            f"encoded the inversion's source prompt: {family.text_encoder}.")
    if encoded.shape != ref.shape or (encoded - ref).abs().max() > 1e-3 * max(1.0, float(ref.abs().max())):
        raise FateZeroError(f"{node}: 'source_prompt' ('{text}') is not the prompt the attention store was inverted "
                            "with; connect the same text that feeds the inversion's source CLIPTextEncode.")


def check_store_model(store: AttentionStore, model, node: str) -> str | None:
    """The MODEL must compute the inversion's UNet call as the inversion's MODEL did. For a store
    inverted with two experts: which one this MODEL is ("high" / "low"; None when it is both)."""
    family = family_of(model)
    if family is None or family.name != store.info.model_family:
        raise FateZeroError(
            f"{node}: 'model' is {'not of a model family FateZero supports' if family is None else 'of family ' + family.name} and the "
            f"attention store was inverted with a model of family {store.info.model_family}; attention cannot be fused across "
            "model families. Connect the MODEL of the checkpoint the store was inverted with, or invert again with "
            "this one.")
    parts = model_state.describe(model)
    digest, info = model_state.digest(parts), store.info
    if info.expert_boundary:
        low, high = digest == info.model_id, digest == info.high_noise_model_id
        if low or high:
            return None if low and high else ("low" if low else "high")
        diffs = [f"the {name}-noise expert in {'; '.join(model_state.differences(ref, parts))}"
                 for name, ref in (("low", info.model_parts), ("high", info.high_noise_model_parts))]
        raise FateZeroError(
            f"{node}: 'model' is neither of the attention store's experts (it differs from {' and from '.join(diffs)}), "
            "so the source row would not repeat the inversion. Connect the high-noise expert's MODEL (as given to the "
            "inversion's model_high_noise) to the fusion node of the high-noise sampler, and the low-noise expert's "
            "(the inversion's model) to the other.")
    if info.model_id == digest:
        return None
    diffs = model_state.differences(info.model_parts, parts)
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
