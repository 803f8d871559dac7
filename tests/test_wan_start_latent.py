"""First-frame edits on Wan 2.2 TI2V 5B: the start image in the latent (issue 35).

The 5B model takes a start image as ComfyUI's ``Wan22ImageToVideoLatent`` makes it: the image's
latent as latent frame 0 and a noise mask of 0 there, which the sampler keeps clean at every
call and the model (``WAN22``) gives timestep 0. The inversion takes the source's start image on
``start_image_latent``; the edit samples from the inverted noise with a ``Wan22ImageToVideoLatent``
of the edited first frame. A tiny random 5B model (``wan_files``), the tiny Wan 2.2 VAE of
``models_wan.wan22_vae``, real core nodes:
- the inversion keeps the start frame clean at every recorded call and records the mask;
- replace fractions 0: plain start-image sampling from the inverted noise, bit for bit;
- the same first frame and prompt fully fused land closer to the clip than sampling back
  without fusion; every source-row call carries the recorded mask, and in the noised-source
  mode gets the clean start frame;
- an edited first frame is the edit's frame 0, and changes the frames after it;
- a start image where none was inverted, or none where one was, is refused by name.
"""
from __future__ import annotations

import pytest
import torch

import models_wan
from test_wan import FRAMES, SIDE, SRC, SWAP, encode, fuse, invert, rel, video, wan  # noqa: F401 (fixtures)
from test_wan22 import video48

STEPS = 6
PIXELS = SIDE * 16  # the Wan 2.2 VAE's 16x spatial compression
LENGTH = 4 * (FRAMES - 1) + 1


@pytest.fixture(scope="module")
def ti2v(node, wan_files):
    return node("UNETLoader").load_unet(wan_files["wan22_5b"], "default")[0]


@pytest.fixture(scope="module")
def vae():
    return models_wan.wan22_vae()


def image(seed: int) -> torch.Tensor:
    """A smooth frame ``[1, H, W, 3]`` in 0..1."""
    low = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(low, size=(PIXELS, PIXELS), mode="bilinear").movedim(1, -1)


def start_latent(node, vae, seed: int) -> dict:
    return node("Wan22ImageToVideoLatent").execute(vae, PIXELS, PIXELS, LENGTH, 1, start_image=image(seed))[0]


def sample(node, model, positive, negative, noise, sigmas, latent, cfg=5.0) -> torch.Tensor:
    guider = node("CFGGuider").get_guider(model, positive, negative, cfg)[0]
    euler = node("KSamplerSelect").get_sampler("euler")[0]
    return node("SamplerCustomAdvanced").sample(noise, guider, euler, sigmas, latent)[0]["samples"]


@pytest.fixture(scope="module")
def inverted(node, ti2v, vae, encode):
    return invert(node, ti2v, encode(SRC), video48(), STEPS, start_image_latent=start_latent(node, vae, 1))


def test_the_inversion_keeps_the_start_frame_and_records_its_mask(node, ti2v, vae, inverted):
    store = inverted[1]
    clean = ti2v.model.process_latent_in(start_latent(node, vae, 1)["samples"])[:, :, 0]
    assert store.info.start_frames == 1
    mask = store.source_conds["denoise_mask"]
    assert not mask[:, :, 0].any() and bool((mask[:, :, 1:] == 1).all())
    for x_in in store.unet_inputs:  # every recorded call: the start frame clean, the others moving
        assert torch.equal(x_in[:, :, 0], clean)
    assert not torch.equal(store.unet_inputs[0][:, :, 1:], store.unet_inputs[-1][:, :, 1:])


def test_replace_fractions_zero_is_plain_start_image_sampling_bit_for_bit(node, ti2v, vae, wan_clip, encode, inverted):
    _, store, sigmas, noise, _ = inverted
    edited = start_latent(node, vae, 2)
    fused = fuse(node, ti2v, store, wan_clip, SWAP, 0.0, 0.0)
    assert torch.equal(sample(node, fused, encode(SWAP), encode(""), noise, sigmas, edited),
                       sample(node, ti2v, encode(SWAP), encode(""), noise, sigmas, edited))


def test_same_first_frame_and_prompt_fully_fused_reproduce_the_clip(node, pack, monkeypatch, ti2v, vae, wan_clip,
                                                                    encode, inverted):
    _, store, sigmas, noise, _ = inverted
    source = start_latent(node, vae, 1)
    clip = video48()["samples"].clone()
    clip[:, :, 0] = source["samples"][:, :, 0]
    masks = []
    patch = pack.fatezero_attn.run.patch.FateZeroPatch
    original = patch.call_model

    def spy(self, apply_model, args, x, t, c, chunk):
        masks.append((c["transformer_options"]["fatezero"].roles, c.get("denoise_mask")))
        return original(self, apply_model, args, x, t, c, chunk)
    monkeypatch.setattr(patch, "call_model", spy)  # before the fusion node binds it for the source row
    full = fuse(node, ti2v, store, wan_clip, SRC, 1.0, 1.0, fused_blocks="all")
    fused = sample(node, full, encode(SRC), encode(SRC), noise, sigmas, source, cfg=1.0)
    recon = sample(node, ti2v, encode(SRC), encode(SRC), noise, sigmas, source, cfg=1.0)
    assert rel(fused, clip) < rel(recon, clip)
    source_masks = [m for roles, m in masks if roles == ["source"]]
    assert len(source_masks) == STEPS
    assert all(m is not None and torch.equal(m.cpu(), store.source_conds["denoise_mask"]) for m in source_masks)


def test_the_noised_source_keeps_the_clean_start_frame(node, pack, monkeypatch, ti2v, vae, wan_clip, encode,
                                                       inverted):
    store = inverted[1]
    inputs = []
    patch = pack.fatezero_attn.run.patch.FateZeroPatch
    original = patch.call_model

    def spy(self, apply_model, args, x, t, c, chunk):
        if c["transformer_options"]["fatezero"].roles == ["source"]:
            inputs.append(x.clone())
        return original(self, apply_model, args, x, t, c, chunk)
    monkeypatch.setattr(patch, "call_model", spy)
    noise = node("RandomNoise").get_noise(5)[0]
    fused = node("FateZeroAttentionFusion").patch(ti2v, store, wan_clip, SRC, SWAP, 0.8, 0.8, "auto", "", "", None,
                                                  "auto", "noised source", noise)[0]
    sigmas = node("BasicScheduler").get_sigmas(ti2v, "simple", 4, 1.0)[0]
    sample(node, fused, encode(SWAP), encode(""), noise, sigmas, start_latent(node, vae, 2), cfg=1.0)
    assert inputs
    for x in inputs:
        assert torch.equal(x[:, :, 0].cpu(), store.clean_latent[:, :, 0])
        assert not torch.equal(x[:, :, 1:].cpu(), store.clean_latent[:, :, 1:])


def test_an_edited_first_frame_is_kept_and_changes_the_frames_after_it(node, ti2v, vae, wan_clip, encode, inverted):
    _, store, sigmas, noise, _ = inverted
    fused = fuse(node, ti2v, store, wan_clip, SWAP)
    same, edited = start_latent(node, vae, 1), start_latent(node, vae, 2)
    a = sample(node, fused, encode(SWAP), encode(""), noise, sigmas, same)
    b = sample(node, fused, encode(SWAP), encode(""), noise, sigmas, edited)
    # the sampler keeps the start frame as given (Euler's last step lands on it up to float rounding)
    for out, given in ((a, same), (b, edited)):
        torch.testing.assert_close(out[:, :, 0], given["samples"][:, :, 0], rtol=1e-5, atol=1e-5)
    assert not torch.equal(a[:, :, 1:], b[:, :, 1:])


def test_start_images_that_do_not_match_the_store_are_refused_by_name(node, ti2v, wan, vae, wan_clip, encode,
                                                                       inverted):
    latent, store, sigmas, noise, _ = inverted
    fused = fuse(node, ti2v, store, wan_clip, SWAP)
    with pytest.raises(ValueError, match="inverted with a start image keeping 1 latent frame.*keeps none.*"
                                         "Wan22ImageToVideoLatent given the edited first frame"):
        sample(node, fused, encode(SWAP), encode(""), noise, sigmas, latent)
    plain = invert(node, ti2v, encode(SRC), video48(), STEPS)
    with pytest.raises(ValueError, match="carries a noise mask.*inverted without one.*start_image_latent"):
        sample(node, fuse(node, ti2v, plain[1], wan_clip, SWAP), encode(SWAP), encode(""), plain[3], plain[2],
               start_latent(node, vae, 2))
    with pytest.raises(ValueError, match="'start_image_latent' is connected and 'model' is WAN21.*only Wan 2.2 TI2V 5B"):
        invert(node, wan, encode(SRC), video(), STEPS, start_image_latent=start_latent(node, vae, 1))
    small = node("Wan22ImageToVideoLatent").execute(vae, PIXELS - 32, PIXELS, LENGTH, 1, start_image=image(1))[0]
    with pytest.raises(ValueError, match="'start_image_latent' has shape .*Wan22ImageToVideoLatent given the clip's"):
        invert(node, ti2v, encode(SRC), video48(), STEPS, start_image_latent=small)
    with pytest.raises(ValueError, match="'start_image_latent' has no noise mask"):
        invert(node, ti2v, encode(SRC), video48(), STEPS, start_image_latent=video48())


def test_a_saved_store_keeps_the_start_image_and_edits_the_same(node, pack, tmp_path, ti2v, vae, wan_clip, encode,
                                                                 inverted):
    _, store, sigmas, noise, _ = inverted
    files = pack.fatezero_attn.store.store_file
    files.save_store(store, tmp_path / "ti2v.safetensors")
    loaded = files.load_store(tmp_path / "ti2v.safetensors")
    assert loaded.info.start_frames == 1
    assert torch.equal(loaded.source_conds["denoise_mask"], store.source_conds["denoise_mask"])
    edited = start_latent(node, vae, 2)
    edit = lambda s: sample(node, fuse(node, ti2v, s, wan_clip, SWAP), encode(SWAP), encode(""), noise, sigmas, edited)
    assert torch.equal(edit(loaded), edit(store))
