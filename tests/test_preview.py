"""FateZero Attention Preview (issue 25): heat maps of the source cross-attention of the prompt's
words over the frames, and the blend mask at tau outlined, read from the store (no model runs).

In process with the real nodes: a store of the tiny SD model (5 non-square frames, 128x256,
inverted in windows of 2), one of the tiny Wan model, and synthetic 48-frame stores at 512x288:
- a word's heat tile is its stored maps (summed over its tokens, mean over the shown calls)
  resized and scaled to each frame's peak, in the ramp, over the frame: computed here from
  ``store.cross_maps`` with the test's own resize, ramp and step -> call rule;
- the mask row is the real FateZero Blend Mask node's mask (``keep_edit``) at that tau, its
  boundary in the outline colour, and its per-step masks average to that node's mask_preview
  (windowed SD: the clip's frames; Wan: latent frames -> the 4n+1 video frames);
- ``max_frames`` picks evenly spaced frames, 8 per page; labels are drawn; errors name the input.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

SRC = "a silver jeep driving down a curvy road in the countryside"
STEPS = 3
FRAMES = 5  # inverted in windows of 2: three sub-videos, the middle frame copied into the other two
AUTHORS = "alphas_cumprod[0] (authors)"
NODE = "FateZero Attention Preview"
SD_TILE = (128, 256)  # 128x256 frames: the tile's longer side is 256
GRAY_INSIDE, GRAY_OUTSIDE = 0.5, 0.5 * 0.35  # the mask row over gray (no images): inside, dimmed outside


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tensors are small: on a busy 2-core machine torch's thread pool makes them ~10x slower
    (the tiny model's inversion: 1 s on one thread, up to 45 s on two). Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clip(checkpoint_dir, checkpoint_name):
    import comfy.sd
    return comfy.sd.load_checkpoint_guess_config(str(checkpoint_dir / "checkpoints" / checkpoint_name),
                                                 output_vae=False, output_model=False)[1]


@pytest.fixture(scope="module")
def pv(pack):
    return pack.fatezero_attn.store.preview


def sd_invert(node, model, clip, frames, window=0, seed=5):
    cond = node("CLIPTextEncode").encode(clip, SRC)[0]
    latent = {"samples": torch.randn(frames, 4, 16, 32, generator=torch.Generator().manual_seed(seed)) * 4}
    return node("FateZeroDDIMInversion").invert(model, cond, latent, STEPS, "middle", 0, True, AUTHORS, "recompute",
                                                0.8, window)[1]


@pytest.fixture(scope="module")
def sd_store(node, tiny_model, clip):
    """One inversion of the tiny SD model (kept to one: the tests' cost), windowed, at 128x256."""
    store = sd_invert(node, tiny_model, clip, FRAMES, window=2)
    assert store.info.window == 2 and store.rows == 7 and store.cross_maps.shape[:4] == (STEPS, 7, 4, 8)
    return store


def clip_rows(store):
    """For each clip frame, its row among the sub-videos laid end to end: in the window that owns it."""
    owner, start = {}, 0
    for s in store.sub_videos():
        for r, f in enumerate(s.frames):
            if not (s.borrowed_anchor and r == s.anchor_row):
                owner[f] = start + r
        start += len(s.frames)
    return [owner[f] for f in range(store.info.frames)]


def synthetic_store(pack, clip, frames=48, hw=(36, 64), steps=10, seed=0):
    """A store of ``frames`` frames at ``hw`` latent (x8 pixels) whose maps differ in every frame."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.rand(steps, frames, hw[0] // 4, hw[1] // 4, 77, generator=g) ** 4
    maps = maps / maps.sum(-1, keepdim=True)
    context = clip.encode_from_tokens(clip.tokenize(SRC))
    st = pack.fatezero_attn.store.attention_store
    info = st.StoreInfo("synthetic", steps, frames, hw, "middle", 640, True)
    return st.AttentionStore(info, torch.linspace(0.03, 14.6, steps + 1), torch.zeros(1), context, maps)


def render(node, store, clip, words="", step=-1, tau=0.3, blend="", images=None, max_frames=16, prompt=SRC):
    return node("FateZeroAttentionPreview").render(store, clip, prompt, words, step, tau, blend, images, max_frames)[0]


# -- independent computations ------------------------------------------------------------------
def sd_positions(clip, word):
    """Token positions of ``word`` in SRC: CLIP-L's tokens of each word, after the start token."""
    tok = clip.tokenizer.clip_l.tokenizer
    pos, out = 1, []
    for w in SRC.split():
        n = len(tok(w, add_special_tokens=False)["input_ids"])
        if w == word:
            out += list(range(pos, pos + n))
        pos += n
    return out


def fused_calls(steps, step):
    """Edit step k reads inversion call steps-1-k; -1: the self-attention steps at fraction 0.8."""
    ks = [step] if step >= 0 else range(int(0.8 * steps))
    return [steps - 1 - k for k in ks]


def expected_heat(store, positions, calls, rows, size):
    m = torch.stack([store.cross_maps[j][rows][..., positions].sum(-1) for j in calls]).mean(0)
    m = F.interpolate(m[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return m / m.flatten(1).max(1).values[:, None, None]


def ramp(stops, v):
    x = v * (len(stops) - 1)
    i = x.floor().clamp(max=len(stops) - 2).long()
    t = (x - i)[..., None]
    return stops[i] * (1 - t) + stops[i + 1] * t


def heat_over(pv, heat, frames):
    gray = (frames * torch.tensor([0.299, 0.587, 0.114])).sum(-1, keepdim=True)
    return pv.HEAT_ALPHA * ramp(pv.STOPS, heat) + (1 - pv.HEAT_ALPHA) * gray


def boundary(mask, width=2):
    """Mask pixels with a pixel outside the mask (or the frame) within ``width`` (Chebyshev)."""
    n, h, w = mask.shape
    outside = torch.ones(n, h + 2 * width, w + 2 * width, dtype=torch.bool)
    outside[:, width:width + h, width:width + w] = ~mask
    near = torch.zeros_like(mask)
    for dy in range(2 * width + 1):
        for dx in range(2 * width + 1):
            near |= outside[:, dy:dy + h, dx:dx + w]
    return mask & near


def mask_row_over_gray(mask):
    tile = torch.where(mask, GRAY_INSIDE, GRAY_OUTSIDE)[..., None].expand(*mask.shape, 3).clone()
    tile[boundary(mask)] = torch.tensor([0.0, 1.0, 1.0])
    return tile


class Sheet:
    """Tiles of the output pages, located from the page size alone (label column on the left)."""

    def __init__(self, pv, out, rows, tile, columns):
        self.out, (self.th, self.tw), self.gap, self.columns = out, tile, pv.GAP, columns
        self.left = out.shape[2] - columns * (self.tw + self.gap)
        self.top = pv.HEADER
        assert out.shape[1] == self.top + rows * (self.th + self.gap), "one band per row"
        assert 100 <= self.left <= 320, "a label column"

    def tile(self, row, frame_index):
        page, col = divmod(frame_index, self.columns)
        y, x = self.top + row * (self.th + self.gap), self.left + col * (self.tw + self.gap)
        return self.out[page, y:y + self.th, x:x + self.tw]

    def row(self, row, count):
        """The first ``count`` tiles of a row ``[count, th, tw, 3]``, over the pages."""
        return torch.stack([self.tile(row, f) for f in range(count)])

    def label(self, row):
        y = self.top + row * (self.th + self.gap)
        return self.out[0, y:y + self.th, :self.left]


def picked_tau(blend, call, quantile=0.6):
    """A tau for a partial mask on a random model's maps, midway in the widest gap between the
    call's normalised pooled values around their ``quantile``, so that no value sits near it
    (two computations of the mask must not disagree on a value rounded to either side)."""
    p = blend.pooled[call]
    values = (p / p.flatten(1).max(1).values[:, None, None]).flatten().double().unique().sort().values
    lo, hi = int(len(values) * (quantile - 0.2)), int(len(values) * (quantile + 0.2))
    gaps = values[lo + 1:hi + 1] - values[lo:hi]
    i = lo + int(gaps.argmax())
    assert float(gaps.max()) > 1e-4, "no gap between the maps' values to put tau in"
    return float((values[i] + values[i + 1]) / 2)


# -- tests -------------------------------------------------------------------------------------
def test_node_is_registered_with_typed_inputs_and_tooltips(pack):
    cls = pack.NODE_CLASS_MAPPINGS["FateZeroAttentionPreview"]
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["FateZeroAttentionPreview"] == NODE
    spec = cls.INPUT_TYPES()
    assert list(spec["required"]) == ["attention_store", "clip", "source_prompt", "words", "step", "tau", "blend_words"]
    assert list(spec["optional"]) == ["images", "max_frames"]
    for name, (_, opts) in {**spec["required"], **spec["optional"]}.items():
        assert opts.get("tooltip"), name
    assert spec["required"]["step"][1]["default"] == -1 and spec["required"]["tau"][1]["default"] == 0.3
    assert cls.RETURN_TYPES == ("IMAGE",)


@pytest.mark.parametrize("step", [-1, 1])
def test_heat_is_the_words_stored_maps_resampled_on_non_square_frames(node, pv, clip, sd_store, step):
    out = render(node, sd_store, clip, words="jeep, silver jeep, curvy road", step=step)
    frames = sd_store.info.frames
    assert out.dtype == torch.float32 and out.shape[0] == 1 and out.shape[-1] == 3
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    sheet = Sheet(pv, out, 3, SD_TILE, frames)
    calls = fused_calls(STEPS, step)
    gray = torch.full((frames, *SD_TILE, 3), 0.5)
    for row, words in enumerate(["jeep", "silver jeep", "curvy road"]):
        pos = [p for w in words.split() for p in sd_positions(clip, w)]
        want = heat_over(pv, expected_heat(sd_store, pos, calls, clip_rows(sd_store), SD_TILE), gray)
        torch.testing.assert_close(sheet.row(row, frames), want, atol=2e-5, rtol=0)
        assert float(sheet.label(row).max()) > 0.8, "the word is written in its label cell"


@pytest.mark.parametrize("step", [-1, 2])  # the fused calls 2, 1 or call 0
def test_mask_outline_is_the_boundary_of_the_blend_mask_nodes_mask(node, pv, clip, sd_store, step):
    calls = fused_calls(STEPS, step)
    blend0, _ = node("FateZeroBlendMask").make(sd_store, clip, SRC, "silver, jeep", 0.3)
    tau = picked_tau(blend0, calls[0])
    blend, _ = node("FateZeroBlendMask").make(sd_store, clip, SRC, "silver, jeep", tau)
    frames, rows = sd_store.info.frames, clip_rows(sd_store)
    masks = torch.stack([blend.keep_edit(j, SD_TILE).view(-1, *SD_TILE)[rows] > 0 for j in calls])
    mask = masks.float().mean(0) >= 0.5  # one call; or in the mask at half of the fused calls or more
    assert 0.05 < float(mask.float().mean()) < 0.95, "a partial mask"
    out = render(node, sd_store, clip, words="jeep", step=step, tau=tau, blend="silver, jeep")
    sheet = Sheet(pv, out, 2, SD_TILE, frames)
    want = mask_row_over_gray(mask)
    for f in range(frames):
        assert torch.equal(sheet.tile(1, f), want[f]), f"frame {f}"
    assert float(sheet.label(1).max()) > 0.8


def test_frames_are_drawn_under_the_heat_at_any_scale_of_the_same_aspect(node, pv, clip, sd_store):
    frames = sd_store.info.frames
    images = torch.rand(frames, 64, 128, 3, generator=torch.Generator().manual_seed(1))  # half size, same aspect
    out = render(node, sd_store, clip, words="road", images=images)
    sheet = Sheet(pv, out, 1, SD_TILE, frames)
    base = F.interpolate(images.permute(0, 3, 1, 2), size=SD_TILE, mode="bilinear", antialias=True,
                         align_corners=False).clamp(0, 1).permute(0, 2, 3, 1)
    want = heat_over(pv, expected_heat(sd_store, sd_positions(clip, "road"), fused_calls(STEPS, -1),
                                       clip_rows(sd_store), SD_TILE), base)
    torch.testing.assert_close(sheet.row(0, frames), want, atol=2e-5, rtol=0)


def test_every_word_of_the_prompt_when_words_is_empty(node, pv, clip, sd_store):
    out = render(node, sd_store, clip, blend="jeep")
    unique = len({w.lower() for w in SRC.split()})  # 'a' twice: one row, both positions
    sheet = Sheet(pv, out, unique + 1, SD_TILE, sd_store.info.frames)
    pos = sd_positions(clip, "a")
    assert len(pos) == 2
    want = heat_over(pv, expected_heat(sd_store, pos, fused_calls(STEPS, -1), clip_rows(sd_store)[:1], SD_TILE),
                     torch.full((1, *SD_TILE, 3), 0.5))
    torch.testing.assert_close(sheet.tile(0, 0), want[0], atol=2e-5, rtol=0)


def test_windowed_store_shows_every_clip_frame_as_the_blend_mask_preview_maps_them(node, pv, clip, sd_store):
    store, frames = sd_store, FRAMES
    blend0, _ = node("FateZeroBlendMask").make(store, clip, SRC, "jeep", 0.3)
    tau = picked_tau(blend0, STEPS - 1)
    _, preview = node("FateZeroBlendMask").make(store, clip, SRC, "jeep", tau)  # mean over all calls, clip frames
    assert preview.shape == (frames, *SD_TILE)
    rows = clip_rows(store)
    assert rows != list(range(frames))
    masks = []
    for step in range(STEPS):
        out = render(node, store, clip, words="jeep", step=step, tau=tau, blend="jeep", max_frames=0)
        sheet = Sheet(pv, out, 2, SD_TILE, frames)
        want = heat_over(pv, expected_heat(store, sd_positions(clip, "jeep"), [STEPS - 1 - step], rows, SD_TILE),
                         torch.full((frames, *SD_TILE, 3), 0.5))
        torch.testing.assert_close(sheet.row(0, frames), want, atol=2e-5, rtol=0)
        masks.append(torch.stack([sheet.tile(1, f).sum(-1) > 1.0 for f in range(frames)]))  # gray or outline
    assert torch.equal(torch.stack(masks).float().mean(0), preview)


def test_max_frames_picks_evenly_spaced_frames_eight_per_page(node, pv, pack, clip):
    store = synthetic_store(pack, clip, frames=20, hw=(8, 16))
    tile = (128, 256)  # 64x128 frames, scaled up to the tile
    pos = sd_positions(clip, "jeep")
    for max_frames, ids in [(16, [round(i * 19 / 15) for i in range(16)]), (0, list(range(20))),
                            (5, [0, 5, 10, 14, 19]), (100, list(range(20)))]:
        out = render(node, store, clip, words="jeep", max_frames=max_frames)
        assert out.shape[0] == -(-len(ids) // 8), max_frames
        sheet = Sheet(pv, out, 1, tile, min(8, len(ids)))
        want = heat_over(pv, expected_heat(store, pos, fused_calls(10, -1), ids, tile),
                         torch.full((len(ids), *tile, 3), 0.5))
        torch.testing.assert_close(sheet.row(0, len(ids)), want, atol=2e-5, rtol=0)


def test_wan_store_maps_latent_frames_to_the_4n_plus_1_video_frames(node, pv, wan_files, wan_clip):
    wan = node("UNETLoader").load_unet(wan_files["wan21"], "default")[0]
    cond = node("CLIPTextEncode").encode(wan_clip, SRC)[0]
    latent = {"samples": torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(2))}
    store = node("FateZeroDDIMInversion").invert(wan, cond, latent, 3, "per-frame", 0, False, "0 (ComfyUI)",
                                                 "auto", 0.8, 0, "euler", 1, "auto")[1]
    assert store.info.latent_frames == 3 and store.cross_maps.shape[1:4] == (3, 4, 4)
    frames, tile = 9, (256, 256)  # 4 * (3 - 1) + 1 video frames of 64x64
    colours = torch.linspace(0.1, 0.9, frames)
    images = colours[:, None, None, None].expand(frames, 64, 64, 3).clone()
    blend0, _ = node("FateZeroBlendMask").make(store, wan_clip, SRC, "jeep", 0.3)
    tau = picked_tau(blend0, 2)
    _, preview = node("FateZeroBlendMask").make(store, wan_clip, SRC, "jeep", tau)
    assert preview.shape == (frames, 64, 64)
    latent_of = [0] + [1 + (f - 1) // 4 for f in range(1, frames)]  # frame 0 alone, then 4 per latent frame
    word = SRC.split().index("jeep")  # umT5: no start token, one piece per word here
    masks = []
    for step in range(3):
        out = render(node, store, wan_clip, words="jeep", step=step, tau=tau, blend="jeep", images=images,
                     max_frames=0)
        assert out.shape[0] == 2, "9 frames: 8 on the first page, 1 on the second"
        sheet = Sheet(pv, out, 2, tile, 8)
        want = heat_over(pv, expected_heat(store, [word], [2 - step], latent_of, tile), images[:, :1, :1].expand(
            frames, *tile, 3))
        torch.testing.assert_close(sheet.row(0, frames), want, atol=2e-5, rtol=0)
        for f in range(frames):
            inside = sheet.tile(1, f)
            assert bool(((inside - colours[f]).abs() < 1e-5).all(-1).any()), "the frame's own colour in the mask"
        masks.append(torch.stack([((sheet.tile(1, f) - colours[f]).abs() < 1e-5).all(-1) |
                                  (sheet.tile(1, f) == torch.tensor([0.0, 1.0, 1.0])).all(-1) for f in range(frames)]))
    up = F.interpolate(preview[:, None], size=tile, mode="nearest")[:, 0]
    assert torch.equal(torch.stack(masks).float().mean(0), up)
    # images of any frame count the VAE encodes to 3 latent frames (9..12) are the video; others are not
    render(node, store, wan_clip, words="jeep", images=images[:1].expand(12, 64, 64, 3))
    with pytest.raises(ValueError, match=r"'images' holds 8 frames.*9 frames \(4n\+1"):
        render(node, store, wan_clip, words="jeep", images=images[:8])


def test_bad_inputs_name_the_node_the_input_and_the_fix(node, pack, clip, sd_store):
    def error(*fragments, **kw):
        with pytest.raises(ValueError) as e:
            render(node, sd_store, clip, **kw)
        for f in fragments:
            assert f in str(e.value), f"{f!r} not in {str(e.value)!r}"
        assert NODE in str(e.value)

    error("'tiger' in 'words'", "not a word of the source prompt", "exactly as they appear", words="jeep, tiger")
    error("'car' in 'blend_words'", "not a word of the source prompt", blend="car")
    error("'tau'", "between 0 and 1", tau=1.5)
    error("'step' is 3", "3 steps", "from 0 to 2", step=3)
    error("'source_prompt'", "not the prompt the attention store was inverted with", prompt="a red car")
    error("'images' holds 2 frames", "5 frames", "Connect the frames that were encoded",
          images=torch.rand(2, 128, 256, 3))
    error("'images' are 128x128", "another aspect ratio", images=torch.rand(FRAMES, 128, 128, 3))
    empty = pack.fatezero_attn.store.attention_store.AttentionStore(sd_store.info, sd_store.sigmas, sd_store.unet_inputs,
                                                    sd_store.source_context, sd_store.cross_maps[:, :, :0])
    with pytest.raises(ValueError, match="holds no cross-attention"):
        render(node, empty, clip)


def test_preview_image_shows_48_frames_at_512x288(node, pack, clip):
    """A long clip's sheet, all frames and at most 16 (its speed: ``make bench-preview``)."""
    store = synthetic_store(pack, clip, frames=48, steps=50)
    images = torch.rand(48, 288, 512, 3, generator=torch.Generator().manual_seed(3))
    for max_frames in (0, 16):
        out = render(node, store, clip, blend="silver, jeep", images=images, max_frames=max_frames)
        assert out.shape[0] == (2 if max_frames else 6) and out.shape[-1] == 3
    shown = node("PreviewImage").save_images(out)["ui"]["images"]
    assert len(shown) == 2 and all(i["type"] == "temp" for i in shown)


def test_preview_picture_for_the_readme(node, clip, sd_store):
    """The preview sheet the README shows (docs/preview.png), made by the node from the tests'
    random model, whose heat maps are noise: a banner on the picture says so. Written when
    FATEZERO_UPDATE_SCREENSHOT is set (as the graph screenshot in test_frontend.py)."""
    import os

    import numpy as np
    from PIL import Image, ImageDraw

    page = render(node, sd_store, clip, words="silver, jeep, road", blend="silver, jeep")[0]
    sheet = Image.fromarray((page.numpy() * 255).round().astype(np.uint8))
    note = ("Random-weight test model: these heat maps are noise. With a real checkpoint each word's row "
            "lights up where that word is in the video.")
    banner = Image.new("RGB", (sheet.width, 28), (150, 25, 25))
    ImageDraw.Draw(banner).text((8, 8), note, fill=(255, 255, 255))
    picture = Image.new("RGB", (sheet.width, sheet.height + banner.height))
    picture.paste(banner, (0, 0))
    picture.paste(sheet, (0, banner.height))
    assert picture.width >= 4 * 144 and np.asarray(sheet).std() > 5  # a sheet with tiles, not a blank page
    if os.environ.get("FATEZERO_UPDATE_SCREENSHOT"):
        docs = Path(__file__).resolve().parents[1] / "docs" / "preview.png"
        picture.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(docs, optimize=True)
        assert docs.stat().st_size < 300_000


def test_map_frame_sources_are_the_video_frames_of_each_map_frame(pack, pv):
    """What a given mask on FateZero Blend Mask is mapped by: a frame of the maps holds one video
    frame (SD), four after the first (Wan's latent frames), or one clip frame per row of a
    windowed store (the anchor, frame 2 of 5, copied into the windows that borrow it)."""
    st = pack.fatezero_attn.store.attention_store
    sd = st.StoreInfo("x", 3, 3, (16, 16), "middle", 0, False)
    assert pv.map_frame_sources(sd) == [[0], [1], [2]]
    wan = st.StoreInfo("x", 3, 1, (8, 8), "per-frame", 0, False, model_family="WAN21", latent_frames=3)
    assert pv.map_frame_sources(wan) == [[0], [1, 2, 3, 4], [5, 6, 7, 8]]
    windowed = st.StoreInfo("x", 3, 5, (16, 16), "middle", 0, False, window=2)
    # windows [0, 1] + anchor 2 in its middle, [2, 3] (the anchor its own), [4] + anchor 2 first
    assert pv.map_frame_sources(windowed) == [[0], [2], [1], [2], [3], [2], [4]]
