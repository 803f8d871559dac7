"""The tiny random Wan parts of ``models_wan`` load through ComfyUI's real loaders as Wan.

ComfyUI's ``nodes`` module only: these tests do not need the pack loaded.
"""
from __future__ import annotations

import pytest
import torch

import models_wan

PROMPT = "a silver jeep driving down a curvy road in the countryside"


@pytest.fixture(scope="module")
def wan21(wan_files):
    import nodes
    return nodes.UNETLoader().load_unet(wan_files["wan21"], "default")[0]


@pytest.fixture(scope="module")
def wan_vae(wan_files):
    import nodes
    return nodes.VAELoader().load_vae(wan_files["vae"])[0]


def test_unet_loader_detects_wan21_and_wan22_5b(wan_files, wan21):
    import comfy.model_base
    import nodes

    assert type(wan21.model.model_config).__name__ == "WAN21_T2V"
    assert type(wan21.model) is comfy.model_base.WAN21
    config = wan21.model.model_config.unet_config
    assert (config["dim"], config["num_heads"], config["num_layers"], config["in_dim"], config["out_dim"]) == (128, 1, 2, 16, 16)
    assert wan21.model.model_sampling.shift == 8.0

    wan22 = nodes.UNETLoader().load_unet(wan_files["wan22_5b"], "default")[0]
    assert type(wan22.model.model_config).__name__ == "WAN22_T2V"
    assert type(wan22.model) is comfy.model_base.WAN22
    assert (wan22.model.model_config.unet_config["in_dim"], wan22.model.model_config.unet_config["out_dim"]) == (48, 48)


def test_diffusion_model_file_is_deterministic(tmp_path, wan_files):
    import folder_paths

    again = models_wan.wan21_diffusion_model(tmp_path)
    assert again.read_bytes() == open(folder_paths.get_full_path("diffusion_models", wan_files["wan21"]), "rb").read()
    assert models_wan.parameter_count(again) == 1_105_344


def test_tokenizer_umt5_layout_and_whole_word_pieces(wan_clip, wan_spiece):
    import sentencepiece

    pairs = wan_clip.tokenize(PROMPT)["umt5xxl"]
    assert len(pairs) == 1 and len(pairs[0]) == models_wan.WAN_TEXT_LEN
    ids = [t for t, _ in pairs[0]]
    words = PROMPT.split()
    # no start token: the words' pieces, the end token 1, then pad 0 up to 512
    assert ids[len(words)] == 1 and set(ids[len(words) + 1:]) == {0}
    assert all(i > 2 for i in ids[:len(words)]) and all(w == 1.0 for _, w in pairs[0])

    proc = sentencepiece.SentencePieceProcessor(model_proto=wan_spiece)
    assert (proc.pad_id(), proc.eos_id(), proc.unk_id(), proc.bos_id()) == (0, 1, 2, -1)
    split = {w: proc.encode(w, out_type=str) for w in models_wan.prompt_words()}
    assert {w: p for w, p in split.items() if p != ["▁" + w]} == {}
    assert ids[:len(words)] == [proc.piece_to_id("▁" + w) for w in words]
    assert models_wan.train_spiece() == wan_spiece  # deterministic


def test_text_encoder_gives_wan_context(wan_clip):
    cond = wan_clip.encode_from_tokens(wan_clip.tokenize(PROMPT))
    assert cond.shape == (1, models_wan.WAN_TEXT_LEN, models_wan.WAN_TEXT_DIM)
    used = len(PROMPT.split()) + 1  # the words and the end token
    assert torch.isfinite(cond).all()
    assert (cond[0, :used].abs().amax(dim=-1) > 0).all()
    assert (cond[0, used:] == 0).all()
    other = wan_clip.encode_from_tokens(wan_clip.tokenize(PROMPT.replace("silver", "red")))
    assert not torch.equal(other[0, :used], cond[0, :used]) and (other[0, used:] == 0).all()


@pytest.mark.parametrize("frames, height, width", [(5, 64, 64), (9, 32, 48), (1, 32, 32)])
def test_vae_round_trip_shapes(wan_vae, frames, height, width):
    import nodes

    assert wan_vae.latent_channels == 16 and type(wan_vae.first_stage_model).__module__ == "comfy.ldm.wan.vae"
    images = torch.rand(frames, height, width, 3, generator=torch.Generator().manual_seed(0))
    latent = wan_vae.encode(images)
    assert latent.shape == (1, 16, (frames - 1) // 4 + 1, height // 8, width // 8)
    assert torch.isfinite(latent).all()
    decoded = wan_vae.decode(latent)
    assert decoded.shape == (1, frames, height, width, 3)
    assert nodes.VAEDecode().decode(wan_vae, {"samples": latent})[0].shape == (frames, height, width, 3)
    assert 0.2 < decoded.mean() < 0.8  # not stuck at the clamp


def test_parts_sample_together(wan21, wan_clip, wan_vae):
    """The three parts in a stock text-to-video run: the prompt changes the result."""
    import nodes

    latent = {"samples": wan_vae.encode(torch.rand(5, 32, 32, 3, generator=torch.Generator().manual_seed(0)))}
    negative = nodes.CLIPTextEncode().encode(wan_clip, "")[0]
    out = {}
    for text in (PROMPT, PROMPT.replace("silver", "red")):
        positive = nodes.CLIPTextEncode().encode(wan_clip, text)[0]
        out[text] = nodes.KSampler().sample(wan21, 0, 3, 1.0, "euler", "simple", positive, negative, latent,
                                            denoise=1.0)[0]["samples"]
    a, b = out.values()
    assert a.shape == latent["samples"].shape and torch.isfinite(a).all()
    assert (a - b).abs().mean() > 0.01 * a.abs().mean()
    assert nodes.VAEDecode().decode(wan_vae, {"samples": a})[0].shape == (5, 32, 32, 3)
