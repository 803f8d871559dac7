"""FateZero on Wan 2.1 (issue 23): flow inversion, fusion and the blend mask on a native video DiT.

A tiny random Wan 2.1 T2V model loaded by the real ``UNETLoader`` (``models_wan``), ComfyUI's
umT5 classes with a SentencePiece model trained in the test (``wan_clip``), and the pack's nodes:
- inversion reconstruction error against steps, first-order (Euler) and fixed-point;
- replace fractions 0: the edit is plain ComfyUI sampling from the inverted latent, bit for bit;
- target = source with every fraction 1: the edit reproduces the reconstruction;
- the fused self- and cross-attention at every fused call are the naive map formulas, per mapping;
- the blend mask follows a word whose key is made to match one region's queries;
- a Wan LoRA before the pack and a core DiT guidance patch (SkipLayerGuidanceDiT) after it compose;
- a saved store edits as the in-memory one; bad inputs are refused by name.
"""
from __future__ import annotations

import math

import pytest
import torch

import models_wan

SRC = "a silver jeep driving down a curvy road in the countryside"
SWAP = "a red jeep driving down a curvy road in the countryside"
STYLE = "watercolor painting of a silver jeep driving down a curvy road in the countryside"
FRAMES, SIDE = 3, 8  # latent frames (9 video frames) of 8x8 latent pixels: 3 x 4 x 4 tokens
STEPS = 10
CFG = 5.0


@pytest.fixture(scope="module")
def wan(node, wan_files):
    return node("UNETLoader").load_unet(wan_files["wan21"], "default")[0]


@pytest.fixture(scope="module")
def encode(node, wan_clip):
    cache = {}

    def enc(text):
        if text not in cache:
            cache[text] = node("CLIPTextEncode").encode(wan_clip, text)[0]
        return cache[text]
    return enc


def video(seed: int = 12, frames: int = FRAMES) -> dict:
    """A smooth video latent ``[1, 16, T, h, w]`` (low-frequency noise drifting over the frames):
    the tiny random VAE's own latents are too rough for a random DiT to invert."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, 16, 1, 4, 4 + frames, generator=g)
    base = torch.nn.functional.interpolate(base, size=(1, SIDE, SIDE + 2 * frames), mode="trilinear")
    return {"samples": torch.cat([base[..., 2 * t:2 * t + SIDE] for t in range(frames)], 2)}


def invert(node, model, cond, latent, steps=STEPS, method="fixed-point", iterations=1, blend_blocks="auto", **kw):
    args = dict(temporal_mode="per-frame", temporal_min_channels=0, video_groupnorm=False, clean_sigma="0 (ComfyUI)",
                store_mode="auto", cache_replace_steps=0.8, window=0, flow_inversion=method,
                fixed_point_iterations=iterations, blend_blocks=blend_blocks)
    args.update(kw)
    return node("FateZeroDDIMInversion").invert(model, cond, latent, steps, **args)


def sample(node, model, positive, negative, inverted, cfg=CFG):
    """SamplerCustomAdvanced as the Wan workflow wires it: the inversion's noise, sigmas and latent, euler."""
    latent, _, sigmas, noise = inverted[:4]
    guider = node("CFGGuider").get_guider(model, positive, negative, cfg)[0]
    sampler = node("KSamplerSelect").get_sampler("euler")[0]
    return node("SamplerCustomAdvanced").sample(noise, guider, sampler, sigmas, latent)[0]["samples"]


def fuse(node, model, store, clip, target, cross=0.8, self_=0.8, mapping="auto", reweight="", blend=None,
         fused_blocks="auto"):
    return node("FateZeroAttentionFusion").patch(model, store, clip, SRC, target, cross, self_, mapping, reweight, "",
                                                  blend, fused_blocks)[0]


def rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def inverted(node, wan, encode):
    return invert(node, wan, encode(SRC), video())


def test_loaders_detect_wan21_and_the_pack_takes_it(pack, wan, wan_clip, encode):
    assert type(wan.model.model_config).__name__ == "WAN21_T2V"
    family = pack.fatezero_attn.families.family_of(wan)
    assert family.name == "WAN21" and family.inverter == "flow" and family.blocks_by_index
    context = encode(SRC)[0][0]
    assert context.shape == (1, 512, 4096)
    words = len(SRC.split())  # one piece per word (models_wan' tokenizer), then the end token, then zeros
    assert bool((context[0, :words + 1].abs().sum(-1) > 0).all()) and not bool(context[0, words + 1:].any())


def test_store_holds_the_video_row_and_the_prompt_columns(inverted, wan):
    latent, store, sigmas, noise, split = inverted
    info = store.info
    assert (info.model_family, info.latent_frames, info.frames, info.inversion) == ("WAN21", FRAMES, 1, "fixed-point")
    assert store.unet_inputs.shape == (STEPS, 1, 16, FRAMES, SIDE, SIDE)
    words = len(SRC.split())
    assert store.cross_maps.shape == (STEPS, FRAMES, SIDE // 2, SIDE // 2, words + 1)  # the prompt's columns only
    assert float(store.sigmas[0]) == 0.0 and float(store.sigmas[-1]) == 1.0
    assert float(sigmas[0]) == 1.0 and float(sigmas[-1]) == 0.0 and len(sigmas) == STEPS + 1
    # the noise carries the inverted latent (the sampler's space); the LATENT is it in latent space
    assert torch.equal(wan.model.process_latent_out(noise.generate_noise(latent)), latent["samples"])


def test_reconstruction_error_against_steps(node, wan, encode):
    """Euler inversion and the fixed-point one (one iteration: the model calls Euler makes; two:
    one more per step), each sampled back with Euler."""
    source, x = encode(SRC), video()
    methods = {"euler": ("euler", 1), "fixed-point": ("fixed-point", 1), "fixed-point x2": ("fixed-point", 2)}
    errors = {}
    for steps in (10, 25, 50):
        for name, (method, iterations) in methods.items():
            inv = invert(node, wan, source, x, steps, method, iterations)
            errors[(name, steps)] = rel(sample(node, wan, source, source, inv, cfg=1.0), x["samples"])
    print("\nreconstruction error (relative to the latent):")
    for steps in (10, 25, 50):
        print(f"  {steps:3d} steps: " + ", ".join(f"{name} {errors[(name, steps)]:.2e}" for name in methods))
        assert errors[("fixed-point", steps)] < 0.5 * errors[("euler", steps)]
        assert errors[("fixed-point x2", steps)] < errors[("fixed-point", steps)]
    for name in methods:
        assert errors[(name, 50)] < errors[(name, 25)] < errors[(name, 10)]


def test_replace_fractions_zero_is_plain_sampling_bit_for_bit(node, wan, wan_clip, encode, inverted):
    store = inverted[1]
    target, negative = encode(SWAP), encode("")
    fused = fuse(node, wan, store, wan_clip, SWAP, 0.0, 0.0)
    assert torch.equal(sample(node, fused, target, negative, inverted), sample(node, wan, target, negative, inverted))


def test_same_prompt_with_every_fraction_one_reproduces_the_reconstruction(node, wan, wan_clip, encode):
    """Target = source, every block and step fused: the edit samples back with the inversion's own
    attention, so it reproduces the video better than plain sampling back does, and it meets the
    reconstruction as the inversion becomes exact (the source row repeats the edit's own call)."""
    source, x = encode(SRC), video()
    gaps = {}
    for steps, iterations in ((10, 1), (50, 2)):
        inv = invert(node, wan, source, x, steps, iterations=iterations)
        recon = sample(node, wan, source, source, inv, cfg=1.0)
        fused = sample(node, fuse(node, wan, inv[1], wan_clip, SRC, 1.0, 1.0, fused_blocks="all"), source, source, inv,
                       cfg=1.0)
        gaps[steps] = rel(fused, recon)
        print(f"\n{steps} steps, {iterations} iteration(s): fused vs reconstruction {gaps[steps]:.2e}; vs the video: "
              f"fused {rel(fused, x['samples']):.2e}, reconstruction {rel(recon, x['samples']):.2e}")
        assert rel(fused, x["samples"]) < 0.9 * rel(recon, x["samples"])
    assert gaps[50] < 0.25 * gaps[10]


def naive_fused(q_src, k_src, q_e, k_e, v, heads, R=None, D=None):
    """``P v`` with the maps written out: ``P = P_src`` (self) or ``P_src R + P_edit diag(D)`` (cross)."""
    def probs(q, k):
        b, n, c = q.shape
        d = c // heads
        qh, kh = (t.double().view(b, -1, heads, d).transpose(1, 2) for t in (q, k))
        return (qh @ kh.transpose(-1, -2) / math.sqrt(d)).softmax(-1)  # [b, heads, Nq, Nk]
    P = probs(q_src, k_src)
    if R is not None:
        P = P @ R.double() + probs(q_e, k_e) * D.double()
    b, n, c = v.shape
    vh = v.double().view(b, -1, heads, c // heads).transpose(1, 2)
    return (P @ vh).transpose(1, 2).reshape(b, -1, c)


@pytest.mark.parametrize("target,mapping,reweight", [(SWAP, "replace", ""), (STYLE, "refine", "watercolor:2")])
def test_fused_attention_is_the_naive_map_formula(node, pack, monkeypatch, wan, wan_clip, encode, inverted, target,
                                                  mapping, reweight):
    dispatch = pack.fatezero_attn.run.dispatch
    calls = {"self": [], "cross": []}
    real_self, real_cross = dispatch.fused_self_attention, dispatch.fused_cross_attention

    def self_spy(q_src, k_src, v_edit, heads, edit_out=None, keep_edit=None, attn=None):
        out = real_self(q_src, k_src, v_edit, heads, edit_out, keep_edit, attn=attn)
        calls["self"].append((q_src, k_src, v_edit, heads, out))
        return out

    def cross_spy(q_src, k_src, q_e, k_e, v_e, R, D, heads, attn=None):
        out = real_cross(q_src, k_src, q_e, k_e, v_e, R, D, heads, attn=attn)
        calls["cross"].append((q_src, k_src, q_e, k_e, v_e, R, D, heads, out))
        return out

    monkeypatch.setattr(dispatch, "fused_self_attention", self_spy)
    monkeypatch.setattr(dispatch, "fused_cross_attention", cross_spy)
    fused = fuse(node, wan, inverted[1], wan_clip, target, 0.6, 0.6, mapping, reweight, fused_blocks="all")
    sample(node, fused, encode(target), encode(""), inverted)
    steps_fused = int(0.6 * STEPS)
    blocks = len(wan.model.diffusion_model.blocks)
    assert len(calls["self"]) == steps_fused * blocks and len(calls["cross"]) == int(0.6 * (STEPS + 1)) * blocks
    for q_src, k_src, v, heads, out in calls["self"]:
        assert q_src.shape[1] == FRAMES * (SIDE // 2) ** 2  # one query sequence over every latent frame
        torch.testing.assert_close(out, naive_fused(q_src, k_src, None, None, v, heads).to(out.dtype))
    reweighted = False
    for q_src, k_src, q_e, k_e, v, R, D, heads, out in calls["cross"]:
        assert R.shape == (512, 512) and k_e.shape[1] == 512
        reweighted = reweighted or bool((R.sum(0) > 1.5).any() or (D > 1.5).any())  # an aligned or a new word
        torch.testing.assert_close(out, naive_fused(q_src, k_src, q_e, k_e, v, heads, R, D).to(out.dtype))
    assert reweighted == bool(reweight)


def test_word_mappings_on_umt5_positions(pack, wan_clip):
    """No start token: the prompt's first word sits at position 0, its end token after its words."""
    from importlib import import_module
    common = import_module(pack.__name__ + ".nodes.common")
    al = pack.fatezero_attn.edit.alignment
    src_words, src = common.prompt_words(wan_clip, SRC, "test", "source")
    tgt_words, tgt = common.prompt_words(wan_clip, SWAP, "test", "target")
    window = common.text_window(wan_clip)
    assert (window.length, window.start) == (512, 0)
    assert common.positions_of(src_words, src, "silver", "test", "w", "source", window.start) == [1]
    S = al.replace_mapper(src, tgt, window.length, window.start)
    n = len(src_words)
    assert S[1, 1] == 1 and S[n, n] == 1 and S[n + 5, n + 5] == 1 and float(S.sum()) == 512
    style_words, style = common.prompt_words(wan_clip, STYLE, "test", "target")
    S, aligned = al.refine_mapper(src, style, window.length, window.start)
    assert aligned[:3].tolist() == [0, 0, 0] and aligned[3] == 1 and S[0, 3] == 1  # 'a' of the source -> 'a' after 'of'
    assert S[n, n + 3] == 1  # the end token


@pytest.mark.parametrize("prompt", ["a (silver:1.2) jeep driving down a curvy road", "a silver jeep (driving) down"])
def test_prompt_weights_are_refused_on_umt5(prompt, pack, wan_clip):
    from importlib import import_module
    common = import_module(pack.__name__ + ".nodes.common")
    common.prompt_words(wan_clip, "a silver jeep, driving down a curvy road.", "test", "prompt")
    with pytest.raises(ValueError, match="test: 'prompt' reaches umT5 with other tokens than its words one by one"):
        common.prompt_words(wan_clip, prompt, "test", "prompt")


def test_blend_mask_follows_a_word_made_to_match_a_region(node, pack, monkeypatch, wan_clip, encode):
    """One word's key at the blend block is set (a rank-one change of that block's key projection)
    to the difference of the mean queries inside and outside a region of the video, which the
    video marks by its content; its blend mask then covers that region and nothing else."""
    import comfy.sd
    block = 1
    x = video(seed=3)
    region = torch.zeros(FRAMES, SIDE, SIDE, dtype=torch.bool)
    region[:, :, :SIDE // 2] = True  # the left half of every latent frame
    x["samples"][:, :, region] += 3.0  # marked by its content
    state = models_wan.wan_model().state_dict()
    model = comfy.sd.load_diffusion_model_state_dict(dict(state))
    # the queries of the blend block's cross-attention, by token (a spy on the pack's dispatcher)
    queries = []
    dispatch = pack.fatezero_attn.run.dispatch.Dispatcher
    real = dispatch.__call__

    def spy(self, attn, q, k, v, extra):
        if attn == "attn2" and extra.get("block") == block and not queries:
            queries.append(q[0].float())
        return real(self, attn, q, k, v, extra)
    monkeypatch.setattr(dispatch, "__call__", spy)
    source = encode(SRC)
    invert(node, model, source, x, 2, blend_blocks=str(block))
    monkeypatch.setattr(dispatch, "__call__", real)
    tokens = torch.nn.functional.max_pool2d(region.float(), 2).flatten() > 0  # [T * h * w] in the patch grid
    direction = queries[0][tokens].mean(0) - queries[0][~tokens].mean(0)
    word = SRC.split().index("jeep")  # no start token: word i at position i
    dm = model.model.diffusion_model
    text = dm.text_embedding(source[0][0].to(dm.text_embedding[0].weight.dtype))[0, word].float()
    key = f"blocks.{block}.cross_attn.k.weight"
    W = state[key].float()
    # W' t = 8 * direction: after k's RMS norm the word's logits are large where q . direction is
    state[key] = (W + torch.outer(8 * direction - W @ text, text) / text.dot(text)).to(state[key].dtype)
    matched = comfy.sd.load_diffusion_model_state_dict(state)
    store = invert(node, matched, source, x, STEPS, blend_blocks=str(block))[1]
    blend, preview = node("FateZeroBlendMask").make(store, wan_clip, SRC, "jeep", 0.5)
    cells = region[:, ::2, ::2].float()  # the region on the token grid the masks are made at
    # the recipe's 3x3 max-pool widens a map by one cell: the region's two columns become three
    expect = torch.nn.functional.max_pool2d(cells, 3, stride=1, padding=1) > 0
    assert expect[:, :, :3].all() and not expect[:, :, 3:].any()
    for j in range(STEPS):
        mask = blend.keep_edit(j, (SIDE // 2, SIDE // 2)).view(FRAMES, SIDE // 2, SIDE // 2) > 0
        assert torch.equal(mask, expect), f"inversion call {j}"
    assert preview.shape == (4 * (FRAMES - 1) + 1, SIDE * 8, SIDE * 8)  # the video's 4n+1 frames
    cell = SIDE * 8 // (SIDE // 2)  # pixels per token
    assert bool((preview[:, :, :3 * cell] == 1).all()) and not bool(preview[:, :, 3 * cell:].any())


def test_saved_store_edits_as_the_one_in_memory(node, wan, wan_clip, encode, inverted):
    name = node("FateZeroSaveAttentionStore").save(inverted[1], "fatezero/test-wan", "temp")["result"][0]
    store, latent, sigmas, noise, split = node("FateZeroLoadAttentionStore").load(name)
    assert store.info == inverted[1].info and split == 0
    target, negative = encode(SWAP), encode("")
    want = sample(node, fuse(node, wan, inverted[1], wan_clip, SWAP), target, negative, inverted)
    # the whole edit from the file: its store, inverted latent, edit sigmas and inverted noise
    got = sample(node, fuse(node, wan, store, wan_clip, SWAP), target, negative, (latent, store, sigmas, noise))
    assert torch.equal(got, want)


@pytest.fixture(scope="module")
def wan_lora(wan, tmp_path_factory):
    """A random rank-4 LoRA on every block's attention projections, in ComfyUI's generic key format."""
    import folder_paths
    folder = tmp_path_factory.mktemp("wan_loras")
    path = models_wan.wan21_lora(folder, "wan_tiny_lora.safetensors", num_layers=len(wan.model.diffusion_model.blocks))
    folder_paths.add_model_folder_path("loras", str(folder))
    return path.name


def test_lora_before_and_dit_guidance_after_compose(node, wan, wan_lora, wan_clip, encode):
    lora = node("LoraLoaderModelOnly").load_lora_model_only(wan, wan_lora, 1.0)[0]
    source, target, negative = encode(SRC), encode(SWAP), encode("")
    inv = invert(node, lora, source, video())
    slg = lambda m: node("SkipLayerGuidanceDiT").execute(m, 3.0, 0.0, 1.0, "1", "", 0.0)[0]
    # fractions 0: the LoRA model with SLG after the fusion node is plain LoRA + SLG sampling
    plain = sample(node, slg(lora), target, negative, inv)
    assert torch.equal(sample(node, slg(fuse(node, lora, inv[1], wan_clip, SWAP, 0.0, 0.0)), target, negative, inv),
                       plain)
    # fused: SLG still acts after the fusion node, and the LoRA reaches the edit
    edit = sample(node, fuse(node, lora, inv[1], wan_clip, SWAP), target, negative, inv)
    edit_slg = sample(node, slg(fuse(node, lora, inv[1], wan_clip, SWAP)), target, negative, inv)
    assert not torch.equal(edit_slg, edit) and not torch.equal(edit_slg, plain)
    # a MODEL without the inversion's LoRA is refused by name
    with pytest.raises(ValueError, match="not the MODEL the attention store was inverted with"):
        fuse(node, wan, inv[1], wan_clip, SWAP)


def test_bad_inputs_are_refused_by_name(node, wan, encode, inverted):
    source = encode(SRC)
    with pytest.raises(ValueError, match="FateZero DDIM Inversion: 'window' is 4; Wan attends"):
        invert(node, wan, source, video(), window=4)
    with pytest.raises(ValueError, match="'store_mode' cache"):
        invert(node, wan, source, video(), store_mode="cache")
    with pytest.raises(ValueError, match="'latent' has shape"):
        invert(node, wan, source, {"samples": torch.zeros(3, 16, 8, 8)})
    with pytest.raises(ValueError, match="'blend_blocks'"):
        invert(node, wan, source, video(), blend_blocks="0-99")


def test_conditioning_and_clip_of_another_text_encoder_are_refused_by_name(node, wan, inverted, sd15_clip):
    """SD1.5's CLIP (77 x 768) on Wan (umT5, 4096 wide): refused by name, not as a matrix-shape error."""
    sd_conditioning = node("CLIPTextEncode").encode(sd15_clip, SRC)[0]
    with pytest.raises(ValueError, match=r"FateZero DDIM Inversion: 'source_conditioning' is text encoded 768 wide, "
                                         r"SD1.x's CLIP-L; this WAN21 model reads text 4096 wide\. .*Load CLIP with "
                                         r"type 'wan' and a umt5_xxl file"):
        invert(node, wan, sd_conditioning, video())
    with pytest.raises(ValueError, match=r"FateZero Attention Fusion: 'clip' encodes text 768 wide, SD1.x's CLIP-L; "
                                         r"the attention store's WAN21 model was given text 4096 wide, umT5-XXL, "
                                         r"Wan's\. Connect .*Load CLIP with type 'wan'"):
        fuse(node, wan, inverted[1], sd15_clip, SWAP)


def with_sampling(model, prediction, **attributes):
    """A clone of ``model`` whose sampling mixes ``prediction`` into its flow schedule, as ComfyUI's
    ``model_sampling()`` builds it (and ModelSamplingDiscrete / ModelNoiseScale patch it in 0.38)."""
    import comfy.model_sampling
    original = model.get_model_object("model_sampling")

    class ModelSampling(comfy.model_sampling.ModelSamplingDiscreteFlow, prediction):
        pass
    sampling = ModelSampling(model.model.model_config)
    sampling.set_parameters(shift=original.shift, multiplier=original.multiplier)
    for name, value in attributes.items():
        setattr(sampling, name, value)
    patched = model.clone()
    patched.add_object_patch("model_sampling", sampling)
    return patched


def test_image_to_image_flow_sampling_is_refused_by_name(node, pack, wan, encode):
    import comfy.model_sampling

    class IMG_TO_IMG_FLOW(comfy.model_sampling.CONST):  # ComfyUI 0.38's, the sampling of WAN21_FlowRVS
        def calculate_denoised(self, sigma, model_output, model_input):
            return model_output

        def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
            return latent_image

    family_of = pack.fatezero_attn.families.family_of
    assert family_of(with_sampling(wan, comfy.model_sampling.CONST)).name == "WAN21"  # the same rebuild, plain flow
    flowrvs = with_sampling(wan, IMG_TO_IMG_FLOW)
    assert family_of(flowrvs) is None
    with pytest.raises(ValueError, match=r"FateZero DDIM Inversion: 'model' .* Its sampling is IMG_TO_IMG_FLOW "
                                         r"\(ComfyUI's WAN21_FlowRVS .* no noise to invert"):
        invert(node, flowrvs, encode(SRC), video())


def test_inverted_noise_is_what_the_sampler_scales_to_the_inverted_latent(node, wan, encode):
    """ComfyUI 0.38's CONST multiplies the sampler's noise by ``noise_scale`` (ModelNoiseScale);
    0.3.75's ignores that attribute. Either way the edit's first latent is the inverted one."""
    import comfy.model_sampling

    class ScaledNoise(comfy.model_sampling.CONST):  # CONST.noise_scaling as ComfyUI 0.38 has it
        def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
            sigma = comfy.model_sampling.reshape_sigma(sigma, noise.ndim)
            return sigma * (self.noise_scale * noise) + (1.0 - sigma) * latent_image

    for prediction, divided in ((ScaledNoise, 8.0), (comfy.model_sampling.CONST, 1.0)):
        model = with_sampling(wan, prediction, noise_scale=8.0)
        latent, store, sigmas, noise = invert(node, model, encode(SRC), video(), steps=3)[:4]
        inverted = model.model.process_latent_in(latent["samples"])
        given = noise.generate_noise(latent)
        assert torch.allclose(given * divided, inverted, rtol=1e-5, atol=1e-5)
        # the first line of ComfyUI's KSAMPLER.sample: where SamplerCustomAdvanced starts the edit
        start = model.get_model_object("model_sampling").noise_scaling(sigmas[:1], given, inverted)
        assert torch.allclose(start, inverted, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="noise_scale 0 .* Set ModelNoiseScale's noise_scale above 0"):
        invert(node, with_sampling(wan, ScaledNoise, noise_scale=0.0), encode(SRC), video(), steps=3)


def test_source_row_walks_one_block_at_a_time_and_edits_as_a_whole_pass(node, pack, monkeypatch, wan, wan_clip,
                                                                         encode, inverted):
    """Issue 33: at a fused step the source row goes through each block just before the edit rows,
    so the edit's attention calls see one block's source q, k; the edit is the whole source pass's
    bit for bit, also with a node that skips a block in a call of its own (SkipLayerGuidanceDiT:
    that call takes the whole pass)."""
    fz = pack.fatezero_attn
    held = {}  # per edit: per fused attention call of the edit rows, the blocks whose source q, k are alive
    rows = fz.run.dispatch.Dispatcher.rows

    def spy(self, attn, q, k, v, extra, info, key, other_out):
        if info.roles != ["source"] and info.source is not None:
            held.setdefault(current, []).append({site for _, site in info.source.qk})
        return rows(self, attn, q, k, v, extra, info, key, other_out)

    monkeypatch.setattr(fz.run.dispatch.Dispatcher, "rows", spy)
    target, negative = encode(SWAP), encode("")
    slg = lambda m: node("SkipLayerGuidanceDiT").execute(m, 3.0, 0.0, 1.0, "1", "", 0.0)[0]
    edits = {}
    for source in ("walked", "whole"):
        monkeypatch.setattr(fz.families.dit.DiTSeam, "source_by_block", source == "walked")
        for name, make in (("plain", lambda m: m), ("slg", slg)):
            current = (source, name)
            fused = make(fuse(node, wan, inverted[1], wan_clip, SWAP, fused_blocks="all"))
            edits[current] = sample(node, fused, target, negative, inverted)
    assert all(len(blocks) == 1 for blocks in held[("walked", "plain")])
    assert any(len(blocks) == 2 for blocks in held[("whole", "plain")])  # the whole pass holds both (the spy sees it)
    for name in ("plain", "slg"):
        assert torch.equal(edits[("walked", name)], edits[("whole", name)])
    assert not torch.equal(edits[("walked", "slg")], edits[("walked", "plain")])


def test_out_of_memory_at_a_fused_step_names_the_inputs_that_lower_it(node, pack, monkeypatch, wan, wan_clip, encode,
                                                                       inverted):
    """Issue 33: the error keeps its type (ComfyUI frees models on it) and gains the run's figures."""
    fz = pack.fatezero_attn

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(fz.run.dispatch, "fused_self_attention", no_memory)
    fused = fuse(node, wan, inverted[1], wan_clip, SWAP, fused_blocks="all")
    with pytest.raises(torch.OutOfMemoryError) as err:
        sample(node, fused, encode(SWAP), encode(""), inverted)
    text = str(err.value)
    assert text.startswith("FateZero Attention Fusion: out of memory at fused edit step 0 (latent 16 x 3 x 8 x 8, "
                           "48 tokens a row")
    assert "'fused_blocks'" in text and "one block's source q, k" in text and "Tried to allocate 2.00 GiB" in text
