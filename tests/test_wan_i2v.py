"""First-frame propagation with Wan image-to-video models (issue 35).

Tiny random I2V models through the real ``UNETLoader`` (``models_wan.wan_i2v_diffusion_model``):
Wan 2.1 I2V (36 input channels, CLIP-vision projection and image cross-attention: ``WAN21_I2V``)
and a Wan 2.2 I2V A14B expert (36 input channels, text cross-attention only). The conditioning
comes from ComfyUI's own ``WanImageToVideo`` with the tiny Wan VAE: the source prompt and the
clip's first frame for the inversion, the target prompt and an edited first frame for the edit.
The CLIP vision features Wan 2.1 takes are a seeded ``comfy.clip_vision.Output`` of CLIP ViT-H's
shape (257 x 1280): ComfyUI's CLIP vision loader only builds ViT-H at its full 632 M parameters.

- the loaders' model configs, the pack's families, and which attention call of a block is fused;
- replace fractions 0: the edit is plain I2V sampling from the inverted latent, bit for bit;
- the same first frame and prompt with every fraction 1 reproduce the clip better than sampling
  back without fusion (the source row replays the start image and CLIP features);
- an edited first frame changes the edit; the two A14B experts split as in text-to-video;
- a missing or mis-sized start image is refused by name, at the inversion and at the sampler.
"""
from __future__ import annotations

import pytest
import torch

import models_wan
from test_wan import FRAMES, SIDE, SRC, SWAP, encode, fuse, invert, rel, sample, video  # noqa: F401 (fixture)

STEPS = 8
PIXELS = SIDE * 8  # the tiny Wan VAE's 8x spatial compression
LENGTH = 4 * (FRAMES - 1) + 1  # video frames of FRAMES latent frames
BOUNDARY = 0.9  # Wan 2.2 I2V A14B's released switch point
CFG = {"2.1": 5.0, "2.2": 1.0}  # the 20-step template's guidance, and the 4-step LoRAs'


@pytest.fixture(scope="module")
def i2v(node, tmp_path_factory):
    """``{"2.1": MODEL, "2.2": MODEL}``, loaded by UNETLoader from files written here."""
    import folder_paths
    folder = tmp_path_factory.mktemp("wan_i2v")
    files = {v: models_wan.wan_i2v_diffusion_model(folder, v) for v in ("2.1", "2.2")}
    folder_paths.add_model_folder_path("diffusion_models", str(folder))
    return {v: node("UNETLoader").load_unet(f.name, "default")[0] for v, f in files.items()}


@pytest.fixture(scope="module")
def vae(node, wan_files):
    return node("VAELoader").load_vae(wan_files["vae"])[0]


def image(seed: int) -> torch.Tensor:
    """A smooth frame ``[1, H, W, 3]`` in 0..1."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, 4, 4, generator=g)
    return torch.nn.functional.interpolate(low, size=(PIXELS, PIXELS), mode="bilinear").movedim(1, -1)


def clip_vision(seed: int = 3):
    import comfy.clip_vision
    out = comfy.clip_vision.Output()
    out.penultimate_hidden_states = torch.randn(1, 257, 1280, generator=torch.Generator().manual_seed(seed))
    return out


def image_conditioning(node, vae, encode, version: str, prompt: str, first_frame, side: int = PIXELS,
                       length: int = LENGTH):
    """WanImageToVideo's (positive, negative) for ``prompt`` and the start image ``first_frame``."""
    vision = clip_vision() if version == "2.1" else None
    out = node("WanImageToVideo").execute(encode(prompt), encode(""), vae, side, side, length, 1,
                                          start_image=first_frame, clip_vision_output=vision)
    return out[0], out[1]


@pytest.fixture(scope="module")
def inverted(node, i2v, vae, encode):
    """Per version: the source's conditioning and the inversion from it."""
    out = {}
    for version, model in i2v.items():
        source = image_conditioning(node, vae, encode, version, SRC, image(1))
        out[version] = (source, invert(node, model, source[0], video(), STEPS))
    return out


def test_loaders_detect_the_i2v_models_and_the_pack_takes_them(pack, i2v, inverted):
    families = pack.fatezero_attn.families
    assert type(i2v["2.1"].model.model_config).__name__ == "WAN21_I2V"
    assert type(i2v["2.2"].model.model_config).__name__ == "WAN21_T2V"  # how ComfyUI detects an A14B I2V expert
    assert [families.family_of(i2v[v]).name for v in ("2.1", "2.2")] == ["WAN21-I2V", "WAN22-I2V"]
    for version, (_, inv) in inverted.items():
        conds = inv[1].source_conds
        assert conds["c_concat"].shape == (1, 20, FRAMES, SIDE, SIDE)  # mask and start image, replayed
        assert ("clip_fea" in conds) == (version == "2.1")


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_only_the_text_cross_attention_is_fused(node, pack, monkeypatch, i2v, vae, wan_clip, encode, inverted,
                                                version):
    """Wan 2.1 I2V's blocks attend to the CLIP tokens (257) before the text (512): the pack takes
    the first and the text call of each block, never the image one."""
    seen = []
    dispatch = pack.fatezero_attn.run.dispatch.Dispatcher
    original = dispatch.__call__

    def spy(self, attn, q, k, v, extra):
        seen.append((attn, extra["block"], k.shape[1]))
        return original(self, attn, q, k, v, extra)
    monkeypatch.setattr(dispatch, "__call__", spy)
    source, inv = inverted[version]
    target = image_conditioning(node, vae, encode, version, SWAP, image(2))
    sample(node, fuse(node, i2v[version], inv[1], wan_clip, SWAP), *target, inv, cfg=CFG[version])
    tokens = FRAMES * (SIDE // 2) ** 2
    assert seen and {(a, n) for a, _, n in seen} == {("attn1", tokens), ("attn2", models_wan.WAN_TEXT_LEN)}


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_replace_fractions_zero_is_plain_i2v_sampling_bit_for_bit(node, i2v, vae, wan_clip, encode, inverted, version):
    _, inv = inverted[version]
    target = image_conditioning(node, vae, encode, version, SWAP, image(2))
    fused = fuse(node, i2v[version], inv[1], wan_clip, SWAP, 0.0, 0.0)
    assert torch.equal(sample(node, fused, *target, inv, cfg=CFG[version]),
                       sample(node, i2v[version], *target, inv, cfg=CFG[version]))


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_same_first_frame_and_prompt_fully_fused_reproduce_the_clip(node, i2v, vae, wan_clip, encode, version):
    """Target = source (prompt and first frame), every block and step fused: the edit samples back
    with the inversion's attention, so it lands closer to the clip than sampling back without it,
    and closer to the reconstruction as the inversion becomes exact (more fixed-point iterations)."""
    source = image_conditioning(node, vae, encode, version, SRC, image(1))
    x = video()["samples"]
    gaps = []
    for iterations in (1, 3):
        inv = invert(node, i2v[version], source[0], video(), STEPS, iterations=iterations)
        recon = sample(node, i2v[version], *source, inv, cfg=1.0)
        full = fuse(node, i2v[version], inv[1], wan_clip, SRC, 1.0, 1.0, fused_blocks="all")
        fused = sample(node, full, *source, inv, cfg=1.0)
        assert rel(fused, x) < rel(recon, x)
        gaps.append(rel(fused, recon))
    assert gaps[1] < gaps[0]


def test_the_source_row_replays_the_source_frame_and_the_edit_takes_the_edited_one(node, pack, monkeypatch, i2v, vae,
                                                                                  wan_clip, encode, inverted):
    """Every source-row call gets the inversion's start image and CLIP features, every edit call
    the edited frame's; an edited first frame changes the edit's first latent frame."""
    calls = []
    patch = pack.fatezero_attn.run.patch.FateZeroPatch
    original = patch.call_model

    def spy(self, apply_model, args, x, t, c, chunk):
        calls.append((c["transformer_options"]["fatezero"].roles, c["c_concat"], c["clip_fea"]))
        return original(self, apply_model, args, x, t, c, chunk)
    monkeypatch.setattr(patch, "call_model", spy)  # before the fusion node binds it for the source row
    source, inv = inverted["2.1"]
    fused = fuse(node, i2v["2.1"], inv[1], wan_clip, SWAP)
    same_frame = image_conditioning(node, vae, encode, "2.1", SWAP, image(1))
    edited_frame = image_conditioning(node, vae, encode, "2.1", SWAP, image(2))
    a = sample(node, fused, *same_frame, inv)
    calls.clear()
    b = sample(node, fused, *edited_frame, inv)
    assert not torch.equal(a[:, :, 0], b[:, :, 0])
    recorded = inv[1].source_conds
    source_calls = [c for c in calls if c[0] == ["source"]]
    edit_calls = [c for c in calls if "cond" in c[0]]
    assert source_calls and edit_calls
    for _, concat, clip in source_calls:
        assert torch.equal(concat.cpu(), recorded["c_concat"]) and torch.equal(clip.cpu(), recorded["clip_fea"])
    for _, concat, _ in edit_calls:  # each row (positive, negative) has the edited frame's latent
        assert all(not torch.equal(row[4:].cpu(), recorded["c_concat"][0, 4:]) for row in concat)


def two_expert_edit(node, clip, source, target, high, low):
    """The A14B I2V graph: one inversion over both experts, SplitSigmas at its split step, the
    high-noise expert's fused MODEL from the inverted noise, the low-noise one without noise."""
    latent, store, sigmas, noise, split = invert(node, low, source[0], video(), STEPS, model_high_noise=high,
                                                 expert_boundary=BOUNDARY)
    assert 0 < split < STEPS
    high_sigmas, low_sigmas = node("SplitSigmas").get_sigmas(sigmas, split)
    euler = node("KSamplerSelect").get_sampler("euler")[0]
    guider = lambda m: node("CFGGuider").get_guider(fuse(node, m, store, clip, SWAP), *target, 1.0)[0]
    mid = node("SamplerCustomAdvanced").sample(noise, guider(high), euler, high_sigmas, latent)[0]
    off = node("DisableNoise").get_noise()[0]
    return node("SamplerCustomAdvanced").sample(off, guider(low), euler, low_sigmas, mid)[0]["samples"]


def test_two_i2v_experts_split_as_in_text_to_video(node, i2v, vae, wan_clip, encode):
    """The same file loaded as both experts edits, bit for bit, as one model in both samplers."""
    low = i2v["2.2"]
    high = node("UNETLoader").load_unet("wan22_tiny_i2v.safetensors", "default")[0]
    source = image_conditioning(node, vae, encode, "2.2", SRC, image(1))
    target = image_conditioning(node, vae, encode, "2.2", SWAP, image(2))
    assert torch.equal(two_expert_edit(node, wan_clip, source, target, high, low),
                       two_expert_edit(node, wan_clip, source, target, low, low))


def test_missing_or_mis_sized_start_images_are_refused_by_name(node, i2v, vae, wan_clip, encode, inverted):
    model = i2v["2.2"]
    with pytest.raises(ValueError, match="'source_conditioning' carries no start image.*WanImageToVideo"):
        invert(node, model, encode(SRC), video(), STEPS)
    small = image_conditioning(node, vae, encode, "2.2", SRC, image(1), side=PIXELS - 16)
    with pytest.raises(ValueError, match="start image on 'source_conditioning' is 3 latent frames of 6x6.*width, height"):
        invert(node, model, small[0], video(), STEPS)
    masked = {**video(), "noise_mask": torch.ones(1, 1, LENGTH, PIXELS, PIXELS)}
    with pytest.raises(ValueError, match="noise mask"):
        invert(node, model, inverted["2.2"][0][0], masked, STEPS)
    _, inv = inverted["2.2"]
    fused = fuse(node, model, inv[1], wan_clip, SWAP)
    with pytest.raises(ValueError, match="sampler's positive carries none.*WanImageToVideo"):
        sample(node, fused, encode(SWAP), encode(""), inv, cfg=1.0)
    short = image_conditioning(node, vae, encode, "2.2", SWAP, image(2), length=LENGTH - 4)
    with pytest.raises(ValueError, match="start image on the sampler's positive is 2 latent frames of 8x8.*length"):
        sample(node, fused, *short, inv, cfg=1.0)
