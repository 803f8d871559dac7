"""Token mapping on real prompts from the authors' examples, with ComfyUI's SD1 tokenizer."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def tokenizer():
    import comfy.sd1_clip
    return comfy.sd1_clip.SDTokenizer().tokenizer  # the CLIP-L BPE that ships with ComfyUI


def tokens(tokenizer, text):
    words = text.split()
    return words, [tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]


def test_per_word_tokens_equal_whole_prompt_tokens(tokenizer):
    text = "van gogh style painting of a yellow sunflower, swaying"
    _, per_word = tokens(tokenizer, text)
    whole = tokenizer(text)["input_ids"][1:-1]
    assert [t for w in per_word for t in w] == whole


def test_refine_watercolor_jeep(pack, tokenizer):
    al = pack.fatezero_attn.edit.alignment
    src_w, src = tokens(tokenizer, "a silver jeep driving down a curvy road in the countryside")
    tgt_w, tgt = tokens(tokenizer, "watercolor painting of a silver jeep driving down a curvy road in the countryside")
    S, aligned = al.refine_mapper(src, tgt)
    n_new = len(al.flatten(tgt)) - len(al.flatten(src))
    assert n_new == 3  # "watercolor painting of" (watercolor is one token)
    # BOS -> BOS; the three new tokens keep their own maps; "a silver jeep ..." shifts by 3
    assert S[0, 0] == 1 and aligned[0] == 1
    assert aligned[1:1 + n_new].tolist() == [0.0] * n_new
    src_len = len(al.flatten(src))
    for i in range(1, src_len + 2):  # words and EOS
        assert S[i, i + n_new] == 1, f"source token {i} should feed target token {i + n_new}"
    assert torch.equal(S.sum(0)[: src_len + n_new + 2], aligned[: src_len + n_new + 2])
    jeep = al.word_positions(tgt_w, tgt, "jeep")
    assert S[:, jeep[0]].argmax() == al.word_positions(src_w, src, "jeep")[0]


def test_replace_bear_tiger(pack, tokenizer):
    al = pack.fatezero_attn.edit.alignment
    _, src = tokens(tokenizer, "a brown bear walking on the rock against a wall")
    _, tgt = tokens(tokenizer, "a red tiger walking on the rock against a wall")
    assert len(al.flatten(src)) == len(al.flatten(tgt))
    S = al.replace_mapper(src, tgt)
    assert torch.equal(S, torch.eye(77))  # word swap with equal token counts: column i -> column i


def test_replace_spreads_a_word_of_other_token_count(pack, tokenizer):
    al = pack.fatezero_attn.edit.alignment
    _, src = tokens(tokenizer, "a cat on the floor")
    _, tgt = tokens(tokenizer, "a hippopotamus on the floor")
    n_tgt = len(tgt[1])
    assert n_tgt > 1
    S = al.replace_mapper(src, tgt)
    assert torch.allclose(S[2, 2:2 + n_tgt], torch.ones(n_tgt))  # "cat" feeds each token of the new word
    assert S[3, 2 + n_tgt] == 1  # "on" follows, shifted
    with pytest.raises(ValueError, match="same number of words"):
        al.replace_mapper(src, tgt[:-1])


def test_word_positions(pack, tokenizer):
    al = pack.fatezero_attn.edit.alignment
    w, t = tokens(tokenizer, "van gogh style painting of a yellow sunflower")
    pos = al.word_positions(w, t, "van gogh")
    assert pos == list(range(1, 1 + len(t[0]) + len(t[1])))
    assert al.word_positions(w, t, "tiger") == []
