"""DDIM inversion with capture, then sampling through ComfyUI's own KSamplerAdvanced."""
from __future__ import annotations

import math

import pytest
import torch

STEPS = 10
FRAMES = 4
AUTHORS = "alphas_cumprod[0] (authors)"


@pytest.fixture(scope="module")
def source_cond():
    g = torch.Generator().manual_seed(11)
    return [[torch.randn(1, 77, 768, generator=g), {}]]


@pytest.fixture(scope="module")
def video_latent():
    g = torch.Generator().manual_seed(12)
    # a smooth "video": one image drifting over the frames, in VAE units (std ~ 1/0.18215)
    base = torch.nn.functional.interpolate(torch.randn(1, 4, 8, 8, generator=g), size=(20, 20), mode="bilinear")
    frames = torch.cat([base[..., i:i + 16, 2:18] for i in range(FRAMES)])
    return {"samples": frames / frames.std() / 0.18215}


@pytest.fixture(scope="module")
def inverted(comfy_nodes, tiny_model, source_cond, video_latent):
    node = comfy_nodes.NODE_CLASS_MAPPINGS["FateZeroDDIMInversion"]()
    return node.invert(tiny_model, source_cond, video_latent, STEPS, "middle", 0, True, AUTHORS)[:3]


def ksample(comfy_nodes, model, cond, latent, cfg=1.0, negative=None, add_noise="disable", seed=0):
    node = comfy_nodes.NODE_CLASS_MAPPINGS["KSamplerAdvanced"]()
    return node.sample(model, add_noise, seed, STEPS, cfg, "ddim", "ddim_uniform", cond, negative or cond, latent,
                       0, 10000, "disable")[0]["samples"]


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


def fused_model(pack, model, store, cross=1.0, self_=1.0):
    hooks = pack.fatezero_attn.run.patch
    cw, sw = pack.fatezero_attn.edit.schedule.replace_step_counts(store.info.steps, cross, self_)
    plan = pack.fatezero_attn.run.plan.FusionPlan(store, torch.eye(77), torch.ones(77), torch.ones(77), torch.full((77,), float(cw)), sw)
    m = model.clone()
    hooks.FateZeroPatch(pack.fatezero_attn.families.sd_unet.SD1, "middle", 0, True, plan=plan).install(m)
    return m


def same_patches(pack, model):
    m = model.clone()
    pack.fatezero_attn.run.patch.FateZeroPatch(pack.fatezero_attn.families.sd_unet.SD1, "middle", 0, True).install(m)
    return m


def test_schedule_is_ksampler_advanced_ddim_uniform(inverted, tiny_model):
    import comfy.samplers
    _, store, edit_sigmas = inverted
    ms = tiny_model.get_model_object("model_sampling")
    ks_sigmas = comfy.samplers.calculate_sigmas(ms, "ddim_uniform", STEPS)
    torch.testing.assert_close(store.edit_sigmas, ks_sigmas[:-1].float())
    # timesteps 1, 101, ..., 901 as in the authors' DDIM scheduler for 10 steps
    assert [int(ms.timestep(s)) for s in store.sigmas[1:]] == list(range(1, 1000, 100))
    assert math.isclose(float(store.sigmas[0]), float(ms.sigmas[0]), rel_tol=1e-6)  # alphas_cumprod[0]
    assert float(edit_sigmas[-1]) == float(store.sigmas[0])  # the authors' editing end point


def test_first_inversion_call_is_the_clean_latent_at_alphas_cumprod_0(inverted, video_latent, tiny_model):
    _, store, _ = inverted
    ms = tiny_model.get_model_object("model_sampling")
    z0 = tiny_model.model.process_latent_in(video_latent["samples"])
    s0, s1 = float(store.sigmas[0]), float(store.sigmas[1])
    # UNet input of call 0: z_0 (at alpha_bar[0]) presented at sigma(t=1): x = z0 * sqrt(1 + s1^2)
    torch.testing.assert_close(store.unet_inputs[0], z0 * math.sqrt(1 + s1 ** 2))
    assert s0 > 0 and not torch.allclose(store.unet_inputs[0], z0 * math.sqrt(1 + s0 ** 2))
    assert ms is not None


def test_store_shapes(inverted, video_latent):
    latent, store, _ = inverted
    assert store.unet_inputs.shape == (STEPS, FRAMES, 4, 16, 16)
    assert store.cross_maps.shape == (STEPS, FRAMES, 4, 4, 77)  # blend level: 1/4 of the latent
    torch.testing.assert_close(store.cross_maps.float().sum(-1), torch.ones(STEPS, FRAMES, 4, 4), atol=2e-3, rtol=0)
    assert latent["samples"].shape == video_latent["samples"].shape
    assert store.info.frames == FRAMES and store.info.steps == STEPS


def test_inversion_then_sampling_reconstructs(pack, comfy_nodes, tiny_model, inverted, video_latent, source_cond):
    latent, store, _ = inverted
    x = video_latent["samples"]
    plain = ksample(comfy_nodes, same_patches(pack, tiny_model), source_cond, latent)
    fused = ksample(comfy_nodes, fused_model(pack, tiny_model, store), source_cond, latent)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5)) * x.std()
    random_err, plain_err, fused_err = rel_err(noise, x), rel_err(plain, x), rel_err(fused, x)
    print(f"reconstruction error: random {random_err:.3f}, no fusion {plain_err:.3f}, full fusion {fused_err:.3f}")
    assert plain_err < 0.2 * random_err
    assert fused_err < 0.9 * plain_err


def test_patched_model_leaves_the_original_untouched(pack, comfy_nodes, tiny_model, inverted, source_cond, video_latent):
    _, store, _ = inverted
    noise_latent = {"samples": torch.zeros_like(video_latent["samples"])}
    before = ksample(comfy_nodes, tiny_model, source_cond, noise_latent, add_noise="enable", seed=3)
    fused = fused_model(pack, tiny_model, store)
    ksample(comfy_nodes, fused, source_cond, inverted[0])
    after = ksample(comfy_nodes, tiny_model, source_cond, noise_latent, add_noise="enable", seed=3)
    assert torch.equal(before, after)
    assert "model_function_wrapper" not in tiny_model.model_options
    assert not tiny_model.object_patches
    assert fused.model is tiny_model.model  # a clone shares weights; the patches live on the clone only


def test_sampler_sigmas_must_match_the_store(pack, comfy_nodes, tiny_model, inverted, source_cond):
    latent, store, _ = inverted
    node = comfy_nodes.NODE_CLASS_MAPPINGS["KSamplerAdvanced"]()
    with pytest.raises(ValueError, match="sampler's sigmas do not match the attention store"):
        node.sample(fused_model(pack, tiny_model, store), "disable", 0, STEPS, 1.0, "ddim", "karras",
                    source_cond, source_cond, latent, 0, 10000, "disable")


def test_editing_with_the_inversion_sigmas_on_sampler_custom(pack, comfy_nodes, tiny_model, inverted, source_cond,
                                                             video_latent):
    latent, store, edit_sigmas = inverted
    guider = comfy_nodes.NODE_CLASS_MAPPINGS["CFGGuider"]().get_guider(fused_model(pack, tiny_model, store),
                                                                       source_cond, source_cond, 1.0)[0]
    sampler = comfy_nodes.NODE_CLASS_MAPPINGS["KSamplerSelect"]().get_sampler("ddim")[0]
    noise = comfy_nodes.NODE_CLASS_MAPPINGS["DisableNoise"]().get_noise()[0]
    out = comfy_nodes.NODE_CLASS_MAPPINGS["SamplerCustomAdvanced"]().sample(noise, guider, sampler, edit_sigmas, latent)[0]
    x = video_latent["samples"]
    via_ksampler = ksample(comfy_nodes, fused_model(pack, tiny_model, store), source_cond, latent)
    print(f"SamplerCustom to alphas_cumprod[0]: {rel_err(out['samples'], x):.4f}, KSamplerAdvanced to 0: "
          f"{rel_err(via_ksampler, x):.4f}")
    assert rel_err(out["samples"], x) < 0.2
    assert not torch.equal(out["samples"], via_ksampler)  # the last step differs: it ends at alphas_cumprod[0]


def test_latent_blend_window_is_the_authors(pack):
    assert list(pack.fatezero_attn.edit.masks.latent_blend_steps(10)) == [2, 3, 4, 5, 6]
    assert list(pack.fatezero_attn.edit.masks.latent_blend_steps(50)) == list(range(10, 39))


def test_latent_blend_step_lands_on_the_blended_latent(pack, inverted):
    """The post-CFG hook changes the denoised value so that ComfyUI's ddim step ends on
    ``z_inv + M (z - z_inv)``, with z_inv one step noisier (the authors' indexing)."""
    fz = pack.fatezero_attn
    _, store, _ = inverted
    pooled = torch.zeros(STEPS, FRAMES, 4, 4)
    pooled[:, :, :2, :] = 1.0  # source mask: top half
    blend = fz.edit.masks.BlendMask(pooled, 0.5, ["jeep"], latent_blend=True, target_words=["car"])
    plan = fz.run.plan.FusionPlan(store, torch.eye(77), torch.ones(77), torch.ones(77), torch.full((77,), 8.0), 8,
                               blend=blend, target_blend_positions=[5])
    run = fz.run.run_state.RunState(plan)
    run.target_maps = torch.zeros(FRAMES, 4, 4, 77)
    run.target_maps[:, :, 3, 5] = 1.0  # target mask: the right column
    k = 3
    sigmas = store.edit_sigmas
    sigma, sigma_next = float(sigmas[k]), float(sigmas[k + 1])
    g = torch.Generator().manual_seed(0)
    x, denoised = torch.randn(FRAMES, 4, 16, 16, generator=g), torch.randn(FRAMES, 4, 16, 16, generator=g)
    args = {"denoised": denoised, "input": x, "sigma": torch.tensor([sigma]),
            "model_options": {"transformer_options": {"sample_sigmas": torch.cat([sigmas, sigmas.new_zeros(1)])}}}
    new = fz.run.latent_blend.latent_blend(run, args)
    step = lambda d: x + (sigma_next - sigma) * (x - d) / sigma
    z_plain, z_blend = step(denoised) / (1 + sigma_next ** 2) ** 0.5, step(new) / (1 + sigma_next ** 2) ** 0.5
    j = STEPS - k  # the inverted latent at the step's UNet timestep s_{N-k}
    z_inv = store.unet_inputs[j] / (1 + float(store.sigmas[j + 1]) ** 2) ** 0.5
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[:8, :] = True
    inside[:, 8:] = True  # column 3 of 4, widened by the 3x3 max-pool
    torch.testing.assert_close(z_blend[..., inside], z_plain[..., inside], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(z_blend[..., ~inside], z_inv[..., ~inside], rtol=1e-4, atol=1e-4)
    args["sigma"] = torch.tensor([float(sigmas[8])])  # outside the window: untouched
    assert fz.run.latent_blend.latent_blend(run, args) is denoised
