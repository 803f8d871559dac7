"""The blend-mask recipe of the authors' code, step by step on hand-made maps."""
from __future__ import annotations

import torch


def test_word_maps_sum_tokens_then_max_pool(pack):
    masks = pack.fatezero_attn.edit.masks
    cross = torch.zeros(1, 1, 5, 5, 77)
    cross[0, 0, 2, 2, 4] = 0.6   # token 4 peaks at the centre
    cross[0, 0, 0, 0, 5] = 0.3   # token 5 at a corner
    cross[0, 0, 4, 4, 9] = 0.9   # token 9 is not a blend word
    pooled = masks.word_maps(cross, [4, 5])[0, 0]
    expect = torch.zeros(5, 5)
    expect[1:4, 1:4] = 0.6       # 3x3 max-pool, stride 1, padding 1
    expect[0:2, 0:2] = torch.maximum(expect[0:2, 0:2], torch.tensor(0.3))
    torch.testing.assert_close(pooled, expect)


def test_threshold_resizes_nearest_then_normalises_per_frame(pack):
    masks = pack.fatezero_attn.edit.masks
    pooled = torch.tensor([[[0.1, 0.2], [0.4, 0.8]],      # frame 0: max 0.8
                           [[0.01, 0.02], [0.03, 0.04]]])  # frame 1: max 0.04, same shape after /max
    m = masks.threshold_mask(pooled, (4, 4), tau=0.3)
    assert m.shape == (2, 4, 4) and m.dtype == torch.bool
    expect0 = torch.tensor([[0, 0], [1, 1]], dtype=torch.bool).repeat_interleave(2, 0).repeat_interleave(2, 1)
    assert torch.equal(m[0], expect0)         # 0.4/0.8 = 0.5 > 0.3; 0.2/0.8 = 0.25 is not
    expect1 = torch.tensor([[0, 1], [1, 1]], dtype=torch.bool).repeat_interleave(2, 0).repeat_interleave(2, 1)
    assert torch.equal(m[1], expect1)         # per-frame max: 0.02/0.04 = 0.5 passes, 0.01/0.04 does not
    assert bool(masks.threshold_mask(pooled, (4, 4), tau=1.0).sum() == 0)  # tau 1: empty, full replacement


def test_blend_mask_per_layer_and_preview(pack):
    masks = pack.fatezero_attn.edit.masks
    pooled = torch.zeros(3, 2, 4, 4)
    pooled[0, :, :2, :2] = 1.0
    pooled[1, :, :, :] = 1.0
    blend = masks.BlendMask(pooled, tau=0.5, words=["jeep"])
    keep = blend.keep_edit(0, (8, 8))
    assert keep.shape == (2, 64, 1)
    assert keep.view(2, 8, 8)[:, :4, :4].all() and keep.view(2, 8, 8)[:, 4:, :].sum() == 0
    preview = blend.preview((16, 16))
    assert preview.shape == (2, 16, 16)
    torch.testing.assert_close(preview[0, 0, 0], torch.tensor(2 / 3))  # in the mask at 2 of 3 steps
    torch.testing.assert_close(preview[0, 15, 15], torch.tensor(1 / 3))
