"""A mask the user already has on FateZero Blend Mask (issue 36, point 5), on the tiny SD1 UNet and
the tiny Wan 2.1 through the real nodes and sampler:
- with blend_words empty the fused rows keep the edit's own self-attention exactly where the given
  mask is, at every fused layer's grid and frame (Wan: a latent frame takes the union of its video
  frames), and take the source's everywhere else;
- with blend_words the fused rows' mask is the words' mask AND the given mask;
- an all-ones mask intersected changes no bit of the edit; the latent blend follows the given mask;
- a mask of another frame count or aspect is refused by name.
"""
from __future__ import annotations

import pytest
import torch

# fixtures: test_nodes' tiny SD1 edit (clip, encode, latent, inverted: 3 frames of 16x16 latent,
# 5 steps), test_wan's tiny Wan 2.1 (wan, its encode), one thread for these small tensors
from test_nodes import SRC, STEPS, clip, encode, inverted, latent  # noqa: F401
from test_preview import one_thread  # noqa: F401
from test_wan import FRAMES as WAN_LATENT_FRAMES
from test_wan import SRC as WAN_SRC
from test_wan import SWAP as WAN_SWAP
from test_wan import encode as wan_encode  # noqa: F401
from test_wan import fuse, invert, sample, video, wan  # noqa: F401

BLEND = "FateZero Blend Mask"
TGT = "a red jeep driving down a curvy road in the countryside"
SD_FRAMES, SD_LATENT = 3, 16  # the tiny UNet's layers: 16x16, 8x8 and 4x4 (the blend level)


@pytest.fixture(scope="module")
def wan_inverted(node, wan, wan_encode):  # noqa: F811 (the fixtures imported above)
    return invert(node, wan, wan_encode(WAN_SRC), video())


def cells_to_pixels(cells: torch.Tensor, pixels: int) -> torch.Tensor:
    """A boolean pattern ``[frames, n, n]`` of square cells as a MASK of ``pixels`` x ``pixels``."""
    return cells.float().repeat_interleave(pixels // cells.shape[1], 1).repeat_interleave(pixels // cells.shape[2], 2)


def on_grid(cells: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The cell pattern on a layer's grid (a multiple of it): each cell covers whole grid cells."""
    return cells.repeat_interleave(grid[0] // cells.shape[1], 1).repeat_interleave(grid[1] // cells.shape[2], 2)


def checker(frames: int, n: int) -> torch.Tensor:
    """``[frames, n, n]`` a checkerboard of cells, shifted by one cell from frame to frame."""
    i = torch.arange(n)
    return torch.stack([(i[:, None] + i[None, :] + f) % 2 == 0 for f in range(frames)])


def spy_fused_self_attention(pack, monkeypatch) -> list[dict]:
    """Each fused self-attention call: the inversion call its mask is for, the mask it got, its
    output, and the two outputs it blends (the edit's own, the source's)."""
    dispatch, masks = pack.fatezero_attn.run.dispatch, pack.fatezero_attn.edit.masks
    real, real_keep = dispatch.fused_self_attention, masks.BlendMask.keep_edit
    calls, asked = [], []

    def keep_spy(self, j, size, device="cpu"):
        asked.append(j)
        return real_keep(self, j, size, device)

    def spy(q_src, k_src, v_edit, heads, edit_out=None, keep_edit=None, attn=None):
        out = real(q_src, k_src, v_edit, heads, edit_out, keep_edit, attn=attn)
        if keep_edit is not None:
            calls.append({"j": asked[-1], "keep": keep_edit[..., 0].cpu(), "out": out, "edit": edit_out,
                          "source": real(q_src, k_src, v_edit, heads, attn=attn)})
        return out
    monkeypatch.setattr(masks.BlendMask, "keep_edit", keep_spy)
    monkeypatch.setattr(dispatch, "fused_self_attention", spy)
    return calls


def check_rows_follow(call: dict, keep: torch.Tensor) -> None:
    """The call got exactly ``keep`` (boolean, the shape of its query rows) and its output is the
    edit's own attention there and the source's elsewhere, bit for bit."""
    got = call["keep"]
    assert bool(((got == 0) | (got == 1)).all()) and torch.equal(got > 0, keep.reshape(got.shape))
    inside = got.reshape(-1) > 0
    out, edit, source = (t.reshape(-1, t.shape[-1]) for t in (call["out"], call["edit"], call["source"]))
    assert torch.equal(out[inside], edit[inside]) and torch.equal(out[~inside], source[~inside])


def sd_edit(node, tiny_model, clip, encode, store, inv, blend):
    fused = node("FateZeroAttentionFusion").patch(tiny_model, store, clip, SRC, TGT, 0.8, 0.8, "replace", "", "",
                                                  blend)[0]
    return node("KSamplerAdvanced").sample(fused, "disable", 0, STEPS, 7.5, "ddim", "ddim_uniform", encode(TGT),
                                           encode(""), inv, 0, 10000, "disable")[0]["samples"]


# the given mask per frame on a 4x4 pattern (the blend level's grid): frame 0 the top-left
# quadrant, frame 1 one off-centre cell and the right column, frame 2 nothing
SD_CELLS = torch.zeros(SD_FRAMES, 4, 4, dtype=torch.bool)
SD_CELLS[0, :2, :2] = True
SD_CELLS[1, 1, 2] = SD_CELLS[1, :, 3] = True


def with_word_peaks(store):
    """The store with its blend maps made by hand: every token's map of frame f is 1 at cell (f, f)
    of the 4x4 map grid and 0 elsewhere, so any blend word's mask is the 3x3 block around it
    (the recipe's max-pool). Returns the store and that mask ``[frames, 4, 4]``."""
    import dataclasses
    maps = torch.zeros_like(store.cross_maps)
    words = torch.zeros(maps.shape[1], 4, 4, dtype=torch.bool)
    for f in range(maps.shape[1]):
        maps[:, f, f, f, :] = 1.0
        words[f, max(f - 1, 0):f + 2, max(f - 1, 0):f + 2] = True
    return dataclasses.replace(store, cross_maps=maps), words


@pytest.mark.parametrize("mode", ["replace", "intersect"])
def test_sd_fused_rows_follow_the_given_mask(mode, pack, monkeypatch, node, tiny_model, clip, encode,
                                             inverted):
    inv, store, _ = inverted
    assert store.cross_maps.shape[1:4] == (SD_FRAMES, 4, 4)
    cells = SD_CELLS
    if mode == "intersect":
        store, words = with_word_peaks(store)
        cells = checker(SD_FRAMES, 4)
        # the case tells AND from either side: the words' mask has cells in and out of the given one
        assert (words & cells).any() and (words & ~cells).any() and (cells & ~words).any()
    mask = cells_to_pixels(cells, 64)  # any size: half the video's 128 x 128 pixels
    blend = node("FateZeroBlendMask").make(store, clip, SRC, "" if mode == "replace" else "jeep", 0.5, mask=mask)[0]
    expected = cells if mode == "replace" else words & cells
    calls = spy_fused_self_attention(pack, monkeypatch)
    sd_edit(node, tiny_model, clip, encode, store, inv, blend)
    grids = set()
    for call in calls:
        side = int(call["keep"].shape[1] ** 0.5)
        grids.add(side)
        check_rows_follow(call, on_grid(expected, (side, side)))
    assert grids == {16, 8, 4}
    assert {c["j"] for c in calls} == fused_calls(pack, store)


def fused_calls(pack, store, fraction: float = 0.8) -> set[int]:
    """The inversion calls whose self-attention the edit fuses at self_replace_steps ``fraction``."""
    schedule, steps = pack.fatezero_attn.edit.schedule, store.info.steps
    self_steps = schedule.replace_step_counts(steps, fraction, fraction)[1]
    return {schedule.inversion_call(steps, k) for k in range(self_steps)}


def test_sd_all_ones_mask_intersected_changes_no_bit(node, tiny_model, clip, encode, inverted):
    inv, store, _ = inverted
    make = node("FateZeroBlendMask").make
    plain = sd_edit(node, tiny_model, clip, encode, store, inv, make(store, clip, SRC, "jeep", 0.5)[0])
    ones = make(store, clip, SRC, "jeep", 0.5, mask=torch.ones(1, 128, 128))[0]
    assert torch.equal(sd_edit(node, tiny_model, clip, encode, store, inv, ones), plain)


def test_sd_latent_blend_keeps_the_inverted_latent_outside_the_given_mask(pack, monkeypatch, node, tiny_model, clip,
                                                                           encode, inverted):
    """tau 1 empties the target words' mask, so the latent blend's mask is the given one alone."""
    inv, store, _ = inverted
    module = pack.fatezero_attn.run.latent_blend
    real, used = module.blend_latents, []
    monkeypatch.setattr(module, "blend_latents", lambda z, z_inv, m: used.append(m.cpu()) or real(z, z_inv, m))
    mask = cells_to_pixels(SD_CELLS, 128)
    blend = node("FateZeroBlendMask").make(store, clip, SRC, "", 1.0, True, "jeep", mask=mask)[0]
    sd_edit(node, tiny_model, clip, encode, store, inv, blend)
    assert used and all(torch.equal(m, on_grid(SD_CELLS, (SD_LATENT, SD_LATENT))) for m in used)


def expect_refusal(fn, *fragments) -> None:
    with pytest.raises(ValueError) as e:
        fn()
    for f in fragments:
        assert f in str(e.value), f"{f!r} not in {str(e.value)!r}"


def test_sd_mask_of_other_frames_is_refused(node, clip, inverted):
    _, store, _ = inverted
    make = lambda mask: node("FateZeroBlendMask").make(store, clip, SRC, "jeep", 0.3, mask=mask)
    expect_refusal(lambda: make(torch.ones(2, 128, 128)), BLEND, "'mask' has 2 frames and the inverted video 3",
                   "Make the mask from the frames the inversion got")
    expect_refusal(lambda: make(torch.ones(3, 128, 228)), BLEND, "'mask' is 228x128 pixels", "video 128x128",
                   "aspect")
    expect_refusal(lambda: node("FateZeroBlendMask").make(store, clip, SRC, "", 0.3), BLEND,
                   "'blend_words' is empty", "connect a 'mask'")
    assert make(torch.ones(128, 128))[1].shape == (SD_FRAMES, 128, 128)  # one mask without a batch axis: every frame


# Wan: 9 video frames (3 latent frames: frame 0 alone, then 1-4 and 5-8) of 64 x 64 pixels, a 4x4
# token grid per latent frame; the given mask per video frame, on that grid
WAN_VIDEO_FRAMES = 4 * (WAN_LATENT_FRAMES - 1) + 1
WAN_CELLS = torch.zeros(WAN_VIDEO_FRAMES + 1, 4, 4, dtype=torch.bool)
WAN_CELLS[0, 0, 0] = True                                   # latent frame 0
WAN_CELLS[1, 1, 1] = WAN_CELLS[3, 2, 3] = True              # latent frame 1: the union of frames 1 and 3
WAN_CELLS[8, :, 3] = True                                   # latent frame 2: frame 8 alone
WAN_CELLS[9] = True  # a tenth frame, which VAE Encode drops (10 frames make 3 latent frames): not in any
WAN_LATENT_CELLS = torch.stack([WAN_CELLS[0], WAN_CELLS[1:5].any(0), WAN_CELLS[5:9].any(0)])


def wan_edit(node, wan, wan_clip, wan_encode, inverted, blend):  # noqa: F811
    fused = fuse(node, wan, inverted[1], wan_clip, WAN_SWAP, 0.6, 0.6, "replace", "", blend, fused_blocks="all")
    return sample(node, fused, wan_encode(WAN_SWAP), wan_encode(""), inverted)


@pytest.mark.parametrize("mode", ["replace", "intersect"])
def test_wan_fused_rows_follow_the_given_mask_on_latent_frames(mode, pack, monkeypatch, node, wan,  # noqa: F811
                                                               wan_clip, wan_encode, wan_inverted):  # noqa: F811
    run = wan_inverted
    store = run[1]
    assert store.cross_maps.shape[1:4] == (WAN_LATENT_FRAMES, 4, 4)
    cells, expected = WAN_CELLS, WAN_LATENT_CELLS
    if mode == "intersect":
        store, words = with_word_peaks(store)
        run = (run[0], store, *run[2:])
        by_latent = checker(WAN_LATENT_FRAMES, 4)
        cells = by_latent[[0, 1, 1, 1, 1, 2, 2, 2, 2]]  # each video frame as its latent frame
        assert (words & by_latent).any() and (words & ~by_latent).any() and (by_latent & ~words).any()
        expected = words & by_latent
    mask = cells_to_pixels(cells, 32)  # any size: half the video's 64 x 64 pixels
    blend = node("FateZeroBlendMask").make(store, wan_clip, WAN_SRC, "" if mode == "replace" else "jeep", 0.5,
                                           mask=mask)[0]
    calls = spy_fused_self_attention(pack, monkeypatch)
    wan_edit(node, wan, wan_clip, wan_encode, run, blend)
    for call in calls:  # one query row over every latent frame's tokens
        assert call["keep"].shape == (1, WAN_LATENT_FRAMES * 16)
        check_rows_follow(call, expected)
    blocks = len(wan.model.diffusion_model.blocks)
    assert len(calls) == len(fused_calls(pack, store, 0.6)) * blocks
    assert {c["j"] for c in calls} == fused_calls(pack, store, 0.6)


def test_wan_mask_of_other_frames_is_refused(node, wan_clip, wan_inverted):
    store = wan_inverted[1]
    make = lambda mask: node("FateZeroBlendMask").make(store, wan_clip, WAN_SRC, "jeep", 0.3, mask=mask)
    expect_refusal(lambda: make(torch.ones(8, 64, 64)), BLEND, "'mask' has 8 frames and the inverted video 9",
                   "3 latent frames", "a mask of 9 to 12 frames fits",
                   "Make the mask from the frames the inversion got")
    expect_refusal(lambda: make(torch.ones(13, 64, 64)), BLEND, "'mask' has 13 frames")
    assert make(torch.ones(12, 64, 64))[1].shape == (WAN_VIDEO_FRAMES, 64, 64)
