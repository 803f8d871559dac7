"""The toy video world (``toyworld/world.py``): seeded clips whose generator knows the truth,
and the readers the edit-quality measures use (colour, object pixels, trajectory, PSNR)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from toyworld import world  # noqa: E402


def test_clips_are_seeded_and_differ_per_seed():
    (clip_a, latent_a), (clip_b, latent_b) = world.sample(7), world.sample(7)
    assert clip_a == clip_b and torch.equal(latent_a, latent_b)
    latents = torch.stack([world.sample(s)[1] for s in range(16)])
    assert latents.shape == (16, world.CHANNELS, world.FRAMES, world.SIZE, world.SIZE)
    # per-clip variation: no two clips share a latent, even with the same caption
    same = [(a, b) for a in range(16) for b in range(a + 1, 16)
            if world.sample(a)[0].caption == world.sample(b)[0].caption]
    assert all(not torch.equal(latents[a], latents[b]) for a, b in same)


@pytest.mark.parametrize("seed", range(24))
def test_the_truth_is_what_the_latent_shows(seed):
    clip, latent = world.sample(seed)
    mask = world.masks(clip)
    assert mask.any((1, 2)).all()  # the object in every frame, inside the picture
    # its colour read back through the decoder, on the true mask and on the pixels it finds
    assert world.colour_inside(latent, mask) == clip.colour
    found = world.object_pixels(latent)
    assert torch.equal(found, mask), "the object's saturated pixels are exactly its mask"
    # the trajectory moves as the caption says, STEP latent pixels per frame
    c = world.centroids(mask)
    dy, dx = world.MOTIONS[clip.motion]
    torch.testing.assert_close(c[1:] - c[:-1], torch.tensor([[dy * world.STEP, dx * world.STEP]] * (world.FRAMES - 1)).float())
    assert clip.caption.split()[1:3] == [clip.colour, clip.shape] and len(clip.caption.split()) == 7


def test_decode_inverts_encode_and_psnr_reads_only_outside_the_mask():
    clip, latent = world.sample(3)
    rgb = world.decode(latent)
    torch.testing.assert_close(world.encode(rgb), latent, rtol=1e-4, atol=1e-5)
    mask = world.masks(clip)
    other = world.render(world.random_clip(torch.Generator().manual_seed(0), colour="blue", shape=clip.shape,
                                           motion=clip.motion, bg=clip.background), torch.Generator().manual_seed(1))
    changed_inside = torch.where(mask[None], other, latent)
    assert world.psnr_outside(changed_inside, latent, mask) >= 100  # identical outside
    assert world.psnr_outside(other, latent, mask) < 40


def test_every_caption_is_seven_words_of_the_world():
    captions = world.all_captions()
    assert len(captions) == len(set(captions)) == len(world.COLOURS) * len(world.SHAPES) * len(world.MOTIONS) * len(world.BACKGROUNDS)
    assert {len(c.split()) for c in captions} == {7}
