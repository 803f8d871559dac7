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


def test_given_mask_cell_is_in_when_more_than_half_covered(pack):
    """Area resampling then a strict threshold at one half: a cell 3/4 covered is in, one exactly
    half covered is not (strict, as tau is); a mask coarser than the grid is spread over its cells."""
    masks = pack.fatezero_attn.edit.masks
    region = torch.zeros(1, 8, 8)
    region[0, 0:4, 0:3] = 1.0   # cell (0, 0) of a 2x2 grid: 12 of its 16 pixels
    region[0, 0:4, 4:6] = 1.0   # cell (0, 1): 8 of 16, exactly half
    region[0, 4:8, 0:1] = 1.0   # cell (1, 0): 4 of 16
    region[0, 4:8, 4:8] = 0.6   # cell (1, 1): a soft mask, mean 0.6
    got = masks.region_mask(region, (2, 2))
    assert got.dtype == torch.bool and torch.equal(got[0], torch.tensor([[True, False], [False, True]]))
    up = masks.region_mask(torch.tensor([[[1.0, 0.0], [0.0, 0.0]]]), (4, 4))  # a small mask on a finer grid
    assert torch.equal(up[0], torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool))


def test_map_frame_takes_the_union_of_its_video_frames(pack):
    masks = pack.fatezero_attn.edit.masks
    video = torch.zeros(5, 2, 2)
    video[0, 0, 0] = 1.0
    video[1, 0, 1] = 1.0
    video[3, 1, 1] = 0.4
    got = masks.region_frames(video, [[0], [1, 2, 3, 4]])  # Wan: frame 0 alone, then four frames a latent frame
    assert torch.equal(got, torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [0.0, 0.4]]]))
    one = masks.region_frames(video[:1], [[0], [1, 2], [3]])  # one frame: the same for every frame
    assert one.shape == (3, 2, 2) and all(torch.equal(f, video[0]) for f in one)


def test_mask_the_size_of_vae_encodes_input_is_cut_as_vae_encode_cuts_it(pack):
    masks = pack.fatezero_attn.edit.masks
    mask = torch.arange(21 * 19, dtype=torch.float32).view(1, 21, 19)
    cut = masks.crop_like_vae(mask, (16, 16), 8)  # 21 -> 16 from row 2, 19 -> 16 from column 1
    assert torch.equal(cut, mask[:, 2:18, 1:17])
    assert masks.crop_like_vae(mask, (40, 40), 8) is mask  # another size: stretched later, not cut


def test_blend_mask_with_a_given_mask_alone_or_intersected(pack):
    masks = pack.fatezero_attn.edit.masks
    pooled = torch.zeros(2, 2, 2, 2)
    pooled[0, :, 0, :] = 1.0  # call 0: the top row of cells
    pooled[1, :, :, 0] = 1.0  # call 1: the left column
    region = torch.zeros(2, 2, 2)
    region[0, :, 1] = 1.0     # frame 0: the right column
    region[1, 1, :] = 1.0     # frame 1: the bottom row
    words = masks.BlendMask(pooled, 0.5, ["jeep"])
    both = masks.BlendMask(pooled, 0.5, ["jeep"], region=region)
    alone = masks.BlendMask(pooled[:, :, :0, :0], 0.5, [], region=region)
    for j in range(2):
        assert torch.equal(alone.mask(j, (2, 2)), region > 0)
        assert torch.equal(both.mask(j, (2, 2)), words.mask(j, (2, 2)) & (region > 0))
    assert both.mask(0, (2, 2))[0].tolist() == [[False, True], [False, False]]  # top row AND right column
    assert not both.mask(1, (2, 2))[0].any()                                      # left column AND right column
    torch.testing.assert_close(alone.keep_edit(1, (2, 2)), (region > 0).flatten(1)[..., None].float())
    assert torch.equal(alone.rows(slice(1, 2)).mask(0, (2, 2)), region[1:] > 0)
    torch.testing.assert_close(alone.preview((4, 4)), region.repeat_interleave(2, 1).repeat_interleave(2, 2))
