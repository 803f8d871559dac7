"""The FateZero nodes wired as a user wires them (in process, real CLIP and sampler nodes),
and the errors a user gets for inputs that do not fit together."""
from __future__ import annotations

import pytest
import torch

SRC = "a silver jeep driving down a curvy road in the countryside"
TGT = "watercolor painting of a silver jeep driving down a curvy road in the countryside"
STEPS = 5


@pytest.fixture(scope="module")
def clip(checkpoint_dir, checkpoint_name):
    import comfy.sd
    return comfy.sd.load_checkpoint_guess_config(str(checkpoint_dir / "checkpoints" / checkpoint_name),
                                                 output_vae=False, output_model=False)[1]


@pytest.fixture(scope="module")
def encode(node, clip):
    return lambda text: node("CLIPTextEncode").encode(clip, text)[0]


@pytest.fixture(scope="module")
def latent():
    return {"samples": torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(4)) * 4}


@pytest.fixture(scope="module")
def inverted(node, tiny_model, encode, latent):
    return node("FateZeroDDIMInversion").invert(tiny_model, encode(SRC), latent, STEPS, "middle", 0, True,
                                                "alphas_cumprod[0] (authors)")[:3]


def fuse(node, model, store, clip, src=SRC, tgt=TGT, cross=0.8, self_=0.8, mapping="auto", reweight="watercolor:10",
         words="", blend=None):
    return node("FateZeroAttentionFusion").patch(model, store, clip, src, tgt, cross, self_, mapping, reweight, words,
                                                 blend)[0]


def sample(node, model, positive, negative, latent, cfg=7.5):
    return node("KSamplerAdvanced").sample(model, "disable", 0, STEPS, cfg, "ddim", "ddim_uniform", positive, negative,
                                           latent, 0, 10000, "disable")[0]["samples"]


@pytest.mark.parametrize("latent_blend", [False, True])
def test_style_edit_pipeline(node, tiny_model, clip, encode, inverted, latent, latent_blend):
    inv, store, _ = inverted
    blend, preview = node("FateZeroBlendMask").make(store, clip, SRC, "silver, jeep", 0.3, latent_blend,
                                                    "jeep" if latent_blend else "")
    assert preview.shape == (3, 128, 128) and 0 <= float(preview.min()) <= float(preview.max()) <= 1
    fused = fuse(node, tiny_model, store, clip, blend=blend)
    edited = sample(node, fused, encode(TGT), encode(""), inv)
    plain = sample(node, tiny_model, encode(TGT), encode(""), inv)
    assert edited.shape == latent["samples"].shape and torch.isfinite(edited).all()
    assert not torch.allclose(edited, plain, atol=1e-3)


def _changed(spec: tuple):
    """A valid value other than the default of a widget input's spec (None for a socket)."""
    kind, opts = spec[0], spec[1]
    if isinstance(kind, list):
        return next(v for v in kind if v != opts.get("default"))
    if kind == "INT":
        return min(opts["default"] + 2, opts.get("max", opts["default"] + 2))
    if kind == "FLOAT":
        return (opts["default"] + opts.get("min", 0.0)) / 2
    if kind == "STRING":
        return "1-2"
    return None


def test_wan_only_inputs_come_last_are_optional_and_leave_an_sd_inversion_alone(pack, node, tiny_model, encode,
                                                                               latent, inverted):
    """The inversion inputs whose tooltip starts 'Wan only' (the five an SD user sees for nothing)
    are optional, after every other input, so saved graphs keep their widget order; set to other
    values on an SD model they change nothing, and the one socket among them is refused by name."""
    types = pack.NODE_CLASS_MAPPINGS["FateZeroDDIMInversion"].INPUT_TYPES()
    specs = {**types["required"], **types["optional"]}
    order = list(specs)
    wan_only = [name for name in order if specs[name][1]["tooltip"].startswith("Wan only")]
    assert len(wan_only) >= 5, wan_only
    assert order[-len(wan_only):] == wan_only, f"Wan-only inputs must come last: {order}"
    assert set(wan_only) <= set(types["optional"])
    fusion = pack.NODE_CLASS_MAPPINGS["FateZeroAttentionFusion"].INPUT_TYPES()
    assert fusion["optional"]["fused_blocks"][1]["tooltip"].startswith("Wan only")

    changed = {name: _changed(specs[name]) for name in wan_only}
    sockets = [name for name, value in changed.items() if value is None]
    assert sockets == ["model_high_noise", "start_image_latent"], sockets
    widgets = {name: value for name, value in changed.items() if value is not None}
    inv, _, sigmas = inverted
    out = node("FateZeroDDIMInversion").invert(tiny_model, encode(SRC), latent, STEPS, "middle", 0, True,
                                               "alphas_cumprod[0] (authors)", **widgets)
    assert torch.equal(out[0]["samples"], inv["samples"]) and torch.equal(out[2], sigmas), widgets
    expect_error(lambda: node("FateZeroDDIMInversion").invert(tiny_model, encode(SRC), latent, STEPS, "middle", 0, True,
                                                              "alphas_cumprod[0] (authors)", model_high_noise=tiny_model),
                 "'model_high_noise'", "Leave it unconnected")
    expect_error(lambda: node("FateZeroDDIMInversion").invert(tiny_model, encode(SRC), latent, STEPS, "middle", 0, True,
                                                              "alphas_cumprod[0] (authors)", start_image_latent=latent),
                 "'start_image_latent'", "Leave it unconnected")


def test_word_swap_with_per_word_windows(node, tiny_model, clip, encode, inverted):
    inv, store, _ = inverted
    tgt = "a silver tiger driving down a curvy road in the countryside"
    fused = fuse(node, tiny_model, store, clip, tgt=tgt, mapping="replace", reweight="", words="tiger:0.2")
    assert torch.isfinite(sample(node, fused, encode(tgt), encode(""), inv)).all()


def expect_error(fn, *fragments):
    with pytest.raises(ValueError) as e:
        fn()
    for f in fragments:
        assert f in str(e.value), f"{f!r} not in {str(e.value)!r}"
    return str(e.value)


FUSION = "FateZero Attention Fusion"
BLEND = "FateZero Blend Mask"


def test_bad_inputs_name_node_input_and_fix(node, tiny_model, clip, inverted):
    _, store, _ = inverted
    expect_error(lambda: node("FateZeroBlendMask").make(store, clip, SRC, "tiger", 0.3), BLEND, "'blend_words'", "not a word of the source prompt")
    expect_error(lambda: node("FateZeroBlendMask").make(store, clip, SRC, "", 0.3), BLEND, "'blend_words' is empty")
    expect_error(lambda: node("FateZeroBlendMask").make(store, clip, SRC, "jeep", 1.5), BLEND, "'tau'", "between 0 and 1")
    expect_error(lambda: node("FateZeroBlendMask").make(store, clip, SRC, "jeep", 0.3, True, ""), BLEND, "'target_blend_words'")
    expect_error(lambda: fuse(node, tiny_model, store, clip, src="a red car"), FUSION, "'source_prompt'", "not the prompt the attention store was inverted with")
    expect_error(lambda: fuse(node, tiny_model, store, clip, tgt="   "), FUSION, "'target_prompt' is empty")
    expect_error(lambda: fuse(node, tiny_model, store, clip, tgt=" ".join(["jeep"] * 80)), FUSION, "'target_prompt'", "tokens", "Shorten")
    expect_error(lambda: fuse(node, tiny_model, store, clip, cross=1.5), FUSION, "'cross_replace_steps'", "between 0 and 1")
    expect_error(lambda: fuse(node, tiny_model, store, clip, self_=-0.1), FUSION, "'self_replace_steps'")
    expect_error(lambda: fuse(node, tiny_model, store, clip, reweight="painterly:10"), FUSION, "'reweight'", "target prompt")
    expect_error(lambda: fuse(node, tiny_model, store, clip, reweight="watercolor=10"), FUSION, "'reweight'", "word:number")
    expect_error(lambda: fuse(node, tiny_model, store, clip, mapping="replace"), FUSION, "'mapping'", "refine")


def test_conditioning_and_clip_of_another_text_encoder_are_refused_by_name(node, tiny_model, inverted, latent,
                                                                           wan_clip):
    """Wan's umT5 (4096 wide) on an SD1 UNet (768): refused before the inversion runs, naming the loader."""
    wan_conditioning = node("CLIPTextEncode").encode(wan_clip, SRC)[0]
    expect_error(lambda: node("FateZeroDDIMInversion").invert(tiny_model, wan_conditioning, latent, STEPS, "middle", 0,
                                                              True, "alphas_cumprod[0] (authors)"),
                 "FateZero DDIM Inversion: 'source_conditioning' is text encoded 4096 wide, umT5-XXL",
                 "this SD1 model reads text 768 wide", "the CLIP output of the Load Checkpoint node")
    expect_error(lambda: fuse(node, tiny_model, inverted[1], wan_clip), FUSION, "'clip' encodes text 4096 wide",
                 "SD1 model was given text 768 wide, SD1.x's CLIP-L", "the CLIP output of the Load Checkpoint node")


def test_store_from_another_model_is_refused(node, clip, inverted):
    import models_sd1
    _, store, _ = inverted
    other = models_sd1.tiny_model_patcher(seed=1)
    expect_error(lambda: fuse(node, other, store, clip), FUSION, "another model", "same checkpoint")


def test_edit_latent_must_match_the_store(node, tiny_model, clip, encode, inverted):
    _, store, _ = inverted
    fused = fuse(node, tiny_model, store, clip)
    wrong = {"samples": torch.randn(2, 4, 16, 16)}
    expect_error(lambda: sample(node, fused, encode(TGT), encode(""), wrong), FUSION, "frames", "same video",
                 "On the sampler node: use the inverted latent")
    fewer_steps = lambda: node("KSamplerAdvanced").sample(fused, "disable", 0, STEPS + 1, 7.5, "ddim", "ddim_uniform",
                                                          encode(TGT), encode(""), inverted[0], 0, 10000, "disable")
    msg = expect_error(fewer_steps, FUSION, "sigmas do not match", f"On the sampler node: steps {STEPS} ",
                       f"the store's: ddim_uniform, {STEPS} steps", "the sampler's: 7 steps")  # ComfyUI's 6 steps are 7
    assert msg.count(",") < 12, msg  # a summary of the schedules, not every sigma


def test_steps_advice_is_the_number_to_type_when_ddim_uniform_adds_a_step(node, tiny_model, clip, encode, latent):
    _, store, _, *_ = node("FateZeroDDIMInversion").invert(tiny_model, encode(SRC), latent, 30, "per-frame", 0, False,
                                                       "alphas_cumprod[0] (authors)")
    assert store.info.steps == 31 and store.info.steps_input == 30
    fused = fuse(node, tiny_model, store, clip)
    for steps in (29, 31):
        wrong = lambda: node("KSamplerAdvanced").sample(fused, "disable", 0, steps, 7.5, "ddim", "ddim_uniform",
                                                        encode(TGT), encode(""), {"samples": latent["samples"]}, 0,
                                                        10000, "disable")
        expect_error(wrong, FUSION, "On the sampler node: steps 30 ", "the store's: ddim_uniform, 31 steps")
    ok = node("KSamplerAdvanced").sample(fused, "disable", 0, 30, 7.5, "ddim", "ddim_uniform", encode(TGT),
                                         encode(""), {"samples": latent["samples"]}, 0, 2, "disable")
    assert torch.isfinite(ok[0]["samples"]).all()  # 30 typed, 31 steps run: the store's schedule


def test_long_source_prompt_is_refused_before_the_inversion_runs(node, tiny_model, encode, latent, monkeypatch):
    import comfy.samplers
    sampled = []
    monkeypatch.setattr(comfy.samplers.CFGGuider, "sample", lambda *args, **kwargs: sampled.append(args))
    long_prompt = " ".join(["jeep"] * 90)
    msg = expect_error(lambda: node("FateZeroDDIMInversion").invert(tiny_model, encode(long_prompt), latent, 50,
                                                                    "per-frame", 0, False,
                                                                    "alphas_cumprod[0] (authors)"),
                       "FateZero DDIM Inversion", "'source_conditioning'", "2 CLIP windows", "Shorten the prompt")
    assert not sampled, "refused only after sampling"
    assert "one CLIP window of 75 tokens" in msg


def test_latent_blend_lands_after_a_post_cfg_patch_added_after_the_fusion_node(node, tiny_model, clip, encode,
                                                                               inverted, pack):
    """PAG (a post-CFG patch) on the fusion node's output: outside the mask every step of the
    blend window still ends on the inverted latent (the blend wraps the whole prediction)."""
    import comfy.sample
    fz = pack.fatezero_attn
    inv, store, _ = inverted
    pooled = torch.zeros(store.info.steps, store.info.frames, 4, 4)
    pooled[..., 0, 0] = 1.0  # the source mask: one corner; the target's: around its attention peak (tau ~1)
    blend = fz.edit.masks.BlendMask(pooled, 0.999, ["jeep"], latent_blend=True, target_words=["jeep"])
    fused = fuse(node, tiny_model, store, clip, blend=blend)
    patch = fused.model_options["model_function_wrapper"].__self__
    plan = patch.plan
    with_pag = node("PerturbedAttentionGuidance").execute(model=fused, scale=3.0).result[0]
    sigmas, steps = store.edit_sigmas.tolist() + [0.0], store.info.steps
    window = list(fz.edit.masks.latent_blend_steps(steps))
    checked, expected = [], {}

    def check(i, x0, x, total):
        # ComfyUI's callback comes after step i's prediction, before its update: x is step i-1's result
        if i - 1 in expected:
            outside, z_inv = expected.pop(i - 1)
            z = x / (1 + sigmas[i] ** 2) ** 0.5
            checked.append(float((z - z_inv).abs().amax(1)[outside].max() / z_inv.abs().max()))
        if i in window and i > 0:  # the mask step i's blend used (the target maps include step i)
            size = tuple(x.shape[-2:])
            src = fz.edit.masks.threshold_mask(plan.blend.pooled[steps - 1 - i], size, plan.blend.tau)
            tgt = fz.edit.masks.threshold_mask(fz.edit.masks.word_maps(patch.run.target_maps[None], list(plan.target_blend_positions))[0],
                                          size, plan.blend.tau)
            outside = ~(src | tgt)
            assert outside.any()
            expected[i] = (outside, store.unet_inputs[steps - i] / (1 + float(store.sigmas[steps - i + 1]) ** 2) ** 0.5)

    out = comfy.sample.sample(with_pag, torch.zeros_like(inv["samples"]), steps, 7.5, "ddim", "ddim_uniform",
                              encode(TGT), encode(""), inv["samples"], disable_noise=True, callback=check,
                              disable_pbar=True, seed=0)
    assert torch.isfinite(out).all()
    assert len(checked) == len([k for k in window if k > 0]) and max(checked) < 1e-4, checked


def test_blend_layers_are_the_deepest_down_level_and_its_up_blocks_not_the_middle(pack, node, tiny_model, encode,
                                                                                  latent):
    """The tiny UNet has transformers at 1, 1/2 and 1/4 of the latent, the middle block at 1/4:
    the blend layers are the 1/4 down transformer and the two up blocks at 1/4 (3 layers)."""
    hooks = pack.fatezero_attn.run.patch
    assert pack.fatezero_attn.families.sd_unet.blend_factor(tiny_model.model.diffusion_model) == 4
    recorder = pack.fatezero_attn.run.capture.Recorder(torch.tensor([0.03, 1.0, 10.0]))
    m = tiny_model.clone()
    hooks.FateZeroPatch(pack.fatezero_attn.families.sd_unet.SD1, recorder=recorder).install(m)
    recorder.record_input(0, latent["samples"])
    x = latent["samples"]
    m.model_options["model_function_wrapper"](m.model.apply_model, {
        "input": x, "timestep": torch.full((x.shape[0],), 1.0),
        "c": {"c_crossattn": encode(SRC)[0][0].expand(x.shape[0], -1, -1),
              "transformer_options": m.model_options["transformer_options"]}, "cond_or_uncond": [0]})
    assert recorder.cross_count[0] == 3 and recorder.cross_sum[0].shape[1:3] == (4, 4)


def test_two_level_unet_gets_its_own_blend_layers(pack, node, clip, encode):
    """No layer at 1/4 of the latent: the deepest down level (1/2) is the blend level."""
    import models_sd1
    two_level = models_sd1.tiny_model_patcher(seed=2, widths=models_sd1.TWO_LEVEL_UNET)
    assert pack.fatezero_attn.families.sd_unet.blend_factor(two_level.model.diffusion_model) == 2
    frames = {"samples": torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(5)) * 4}
    inv, store, _, *_ = node("FateZeroDDIMInversion").invert(two_level, encode(SRC), frames, STEPS, "middle", 0, True,
                                                         "alphas_cumprod[0] (authors)")
    assert store.cross_maps.shape[2:4] == (8, 8)
    blend, preview = node("FateZeroBlendMask").make(store, clip, SRC, "jeep", 0.3)
    assert preview.shape == (2, 128, 128) and float(preview.max()) > 0
    edited = sample(node, fuse(node, two_level, store, clip, blend=blend), encode(TGT), encode(""), inv)
    assert torch.isfinite(edited).all()


def test_blend_mask_thresholds_float32_maps(pack, node, clip, inverted):
    """Pick tau between a pixel's normalised value and its value after an fp16 round-trip of the
    stored maps: the mask must follow the float32 value (the store keeps float32)."""
    masks = pack.fatezero_attn.edit.masks
    _, store, _ = inverted
    assert store.cross_maps.dtype == torch.float32
    position = [3]  # "jeep" is the 4th token of the source prompt ("a silver jeep ...": BOS, a, silver, jeep)

    def normalised(maps):
        pooled = masks.word_maps(maps, position)[0]  # step 0
        resized = torch.nn.functional.interpolate(pooled[:, None], size=(16, 16), mode="nearest")[:, 0]
        return resized / resized.amax(dim=(1, 2), keepdim=True)

    exact, rounded = normalised(store.cross_maps), normalised(store.cross_maps.half().float())
    gap = (exact - rounded).abs()
    assert float(gap.max()) > 0, "fp16 rounding moved nothing: the test case cannot show a flip"
    i = int(gap.argmax())
    tau = float((exact.flatten()[i] + rounded.flatten()[i]) / 2)  # between the two: fp16 would flip this pixel
    blend = node("FateZeroBlendMask").make(store, clip, SRC, "jeep", tau)[0]
    got = masks.threshold_mask(blend.pooled[0], (16, 16), tau)
    assert torch.equal(got, exact > tau) and not torch.equal(got, rounded > tau)
