"""Video-wide GroupNorm: ResNet norms take statistics over all frames of a branch."""
from __future__ import annotations

import torch


def test_video_group_norm_uses_statistics_of_all_frames(pack):
    norm = torch.nn.GroupNorm(4, 8, eps=1e-6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    batch = pack.fatezero_attn.run.video_norm.VideoBatch()
    video_norm = pack.fatezero_attn.run.video_norm.video_group_norm(norm, batch)
    assert video_norm.weight is norm.weight  # same parameters, nothing copied
    frames = 3
    x = torch.randn(2 * frames, 8, 5, 5) * torch.arange(1, 2 * frames + 1).view(-1, 1, 1, 1)
    batch.chunk = frames
    out = video_norm(x)
    # the reference: per branch, per group, mean and variance over (frames, channels of group, h, w)
    ref = []
    for branch in x.split(frames):
        g = branch.view(frames, 4, 2, 5, 5)
        mean = g.mean(dim=(0, 2, 3, 4), keepdim=True)
        var = g.var(dim=(0, 2, 3, 4), unbiased=False, keepdim=True)
        ref.append(((g - mean) / (var + 1e-6).sqrt()).view(frames, 8, 5, 5))
    ref = torch.cat(ref) * norm.weight.view(1, -1, 1, 1) + norm.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(out, norm(x), atol=1e-3)  # per-frame statistics differ
    batch.chunk = None
    torch.testing.assert_close(video_norm(x), norm(x))


def test_resblock_and_output_norms_are_patched_but_not_transformer_norms(pack, tiny_model):
    hooks = pack.fatezero_attn.run.patch
    dm = tiny_model.model.diffusion_model
    names = pack.fatezero_attn.families.sd_unet.group_norm_names(dm)
    assert "diffusion_model.out.0" in names
    assert all(n.endswith(("in_layers.0", "out_layers.0")) for n in names[:-1])
    assert not any(".norm" in n.split("diffusion_model.")[1] for n in names)  # SpatialTransformer.norm stays per frame
    on, off = tiny_model.clone(), tiny_model.clone()
    sd1 = pack.fatezero_attn.families.sd_unet.SD1
    hooks.FateZeroPatch(sd1, video_groupnorm=True).install(on)
    hooks.FateZeroPatch(sd1, video_groupnorm=False).install(off)
    assert set(on.object_patches) == set(names) and not off.object_patches


def test_unet_output_changes_with_video_groupnorm(pack, tiny_model):
    """The UNet's noise prediction with and without video-wide statistics (ComfyUI applies the patch)."""
    import comfy.model_management
    hooks = pack.fatezero_attn.run.patch
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 4, 16, 16, generator=g) * torch.arange(1, 5).view(-1, 1, 1, 1)
    cond = [[torch.randn(1, 77, 768, generator=g), {}]]

    def predict(model):
        import comfy.samplers
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(cond, cond)
        guider.set_cfg(1.0)
        sigmas = torch.tensor([1.0, 0.0])
        sampler = comfy.samplers.sampler_object("euler")
        return guider.sample(torch.zeros_like(x), x, sampler, sigmas, seed=0)

    on, off = tiny_model.clone(), tiny_model.clone()
    sd1 = pack.fatezero_attn.families.sd_unet.SD1
    hooks.FateZeroPatch(sd1, video_groupnorm=True).install(on)
    hooks.FateZeroPatch(sd1, video_groupnorm=False).install(off)
    a, b = predict(on), predict(off)
    torch.testing.assert_close(b, predict(tiny_model))  # the wrapper alone changes nothing
    assert (a - b).abs().max() > 1e-3
    comfy.model_management.soft_empty_cache()
    # after sampling ComfyUI restored the original modules
    assert type(tiny_model.model.diffusion_model.out[0]).__name__ != "VideoGroupNorm"
