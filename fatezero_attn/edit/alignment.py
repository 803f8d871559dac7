"""Token alignment between the source and the target prompt (Prompt-to-Prompt's idea).

Prompts are given as lists of words, each word as its token ids (no BOS/EOS). A text
window (``TextWindow``) says where they sit: CLIP's 77 positions start with BOS (the prompt's
tokens from position 1), umT5's 512 (Wan) have no start token (from position 0); EOS and
padding fill the rest. A *mapper* says which source columns of the cross-attention map each
target column takes:

- word swap (``replace``): the prompts have the same number of words; word i of the
  target takes the columns of word i of the source (spread evenly when the words have
  different token counts); ``S[src, tgt]`` is a matrix;
- ``refine``: a global alignment of the two token sequences; aligned target tokens take
  their source column, new target tokens (``aligned == 0``) keep their own map.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

MAX_TOKENS = 77


@dataclass(frozen=True)
class TextWindow:
    """Where a text encoder's prompt tokens sit in its context: ``length`` positions, the
    first word token at ``start`` (1 after CLIP's BOS, 0 for umT5)."""
    length: int = MAX_TOKENS
    start: int = 1

    @property
    def max_prompt_tokens(self) -> int:
        return self.length - self.start - 1  # room for the end token


CLIP_WINDOW = TextWindow()
UMT5_WINDOW = TextWindow(512, 0)


def flatten(words: list[list[int]]) -> list[int]:
    return [t for w in words for t in w]


def word_positions(words: list[str], word_tokens: list[list[int]], wanted: str, start: int = 1) -> list[int]:
    """Token positions (in the context, the first word at ``start``) of every occurrence of the word(s) ``wanted``."""
    wanted_words = wanted.lower().split()
    positions: list[int] = []
    pos = start
    spans = []
    for w, toks in zip(words, word_tokens):
        spans.append((w.lower(), list(range(pos, pos + len(toks)))))
        pos += len(toks)
    n = len(wanted_words)
    for i in range(len(spans) - n + 1):
        if [s[0] for s in spans[i:i + n]] == wanted_words:
            for s in spans[i:i + n]:
                positions.extend(s[1])
    return positions


def replace_mapper(src: list[list[int]], tgt: list[list[int]], max_len: int = MAX_TOKENS,
                   start: int = 1) -> torch.Tensor:
    """Word-swap mapper ``S`` ``[max_len, max_len]``: fused[:, j] = sum_i src[:, i] * S[i, j]."""
    if len(src) != len(tgt):
        raise ValueError(f"word swap needs the same number of words in both prompts "
                         f"(source {len(src)}, target {len(tgt)})")
    S = torch.zeros(max_len, max_len)
    for b in range(start):  # BOS maps onto BOS
        S[b, b] = 1.0
    i = j = start
    for ws, wt in zip(src, tgt):
        if len(ws) == len(wt):
            for a in range(len(ws)):
                S[i + a, j + a] = 1.0
        else:  # a word of another token count: each target token takes the word's mean column
            S[i:i + len(ws), j:j + len(wt)] = 1.0 / len(ws)
        i, j = i + len(ws), j + len(wt)
    while i < max_len and j < max_len:  # EOS and padding move together
        S[i, j] = 1.0
        i, j = i + 1, j + 1
    return S


def global_alignment(x: list[int], y: list[int]) -> list[int]:
    """Needleman-Wunsch (match 1, mismatch -1, gap 0): for each position of ``y`` the
    aligned position of ``x`` or -1."""
    n, m = len(x), len(y)
    score = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            diag = score[i - 1][j - 1] + (1 if x[i - 1] == y[j - 1] else -1)
            score[i][j] = max(diag, score[i - 1][j], score[i][j - 1])
    out = [-1] * m
    i, j = n, m
    while i > 0 and j > 0:
        if x[i - 1] == y[j - 1] and score[i][j] == score[i - 1][j - 1] + 1:
            out[j - 1] = i - 1
            i, j = i - 1, j - 1
        elif score[i][j] == score[i - 1][j]:
            i -= 1
        else:
            j -= 1
    return out


def refine_mapper(src: list[list[int]], tgt: list[list[int]], max_len: int = MAX_TOKENS,
                  start: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Refine mapper as ``(S [max_len, max_len], aligned [max_len])``."""
    bos = [-1] * start
    x = bos + flatten(src) + [-2]  # BOS (if any) and EOS take part in the alignment
    y = bos + flatten(tgt) + [-2]
    if len(x) > max_len or len(y) > max_len:
        raise ValueError(f"prompt longer than the tokenizer's window of {max_len - start - 1} tokens")
    match = global_alignment(x, y)
    S = torch.zeros(max_len, max_len)
    aligned = torch.zeros(max_len)
    for j, i in enumerate(match):
        if i >= 0:
            S[i, j] = 1.0
            aligned[j] = 1.0
    for j in range(len(y), max_len):  # padding after EOS maps onto the source's padding
        S[min(len(x) + j - len(y), max_len - 1), j] = 1.0
        aligned[j] = 1.0
    return S, aligned
