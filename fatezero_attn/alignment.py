"""Token alignment between the source and the target prompt (Prompt-to-Prompt's idea).

Prompts are given as lists of words, each word as its CLIP token ids (no BOS/EOS).
Position 0 of the 77-token sequence is BOS; a prompt's tokens follow; EOS and padding
fill the rest. A *mapper* says which source columns of the cross-attention map each
target column takes:

- word swap (``replace``): the prompts have the same number of words; word i of the
  target takes the columns of word i of the source (spread evenly when the words have
  different token counts); ``S[src, tgt]`` is a matrix;
- ``refine``: a global alignment of the two token sequences; aligned target tokens take
  their source column, new target tokens (``aligned == 0``) keep their own map.
"""
from __future__ import annotations

import torch

MAX_TOKENS = 77


def flatten(words: list[list[int]]) -> list[int]:
    return [t for w in words for t in w]


def word_positions(words: list[str], word_tokens: list[list[int]], wanted: str) -> list[int]:
    """Token positions (in the 77-sequence) of every occurrence of the word(s) ``wanted``."""
    wanted_words = wanted.lower().split()
    positions: list[int] = []
    pos = 1  # after BOS
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


def replace_mapper(src: list[list[int]], tgt: list[list[int]], max_len: int = MAX_TOKENS) -> torch.Tensor:
    """Word-swap mapper ``S`` ``[max_len, max_len]``: fused[:, j] = sum_i src[:, i] * S[i, j]."""
    if len(src) != len(tgt):
        raise ValueError(f"word swap needs the same number of words in both prompts "
                         f"(source {len(src)}, target {len(tgt)})")
    S = torch.zeros(max_len, max_len)
    S[0, 0] = 1.0
    i = j = 1
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


def refine_mapper(src: list[list[int]], tgt: list[list[int]], max_len: int = MAX_TOKENS) -> tuple[torch.Tensor, torch.Tensor]:
    """Refine mapper as ``(S [max_len, max_len], aligned [max_len])``."""
    x = [-1] + flatten(src) + [-2]  # BOS and EOS take part in the alignment
    y = [-1] + flatten(tgt) + [-2]
    if len(x) > max_len or len(y) > max_len:
        raise ValueError("prompt longer than the tokenizer's window of 75 tokens")
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
