"""Beyond SD1.5 (issue 13): SD 2.x (512 eps, 768 v-prediction) and SDXL checkpoints.

Random-weight checkpoints of each family (``models_sd2_sdxl.py``), loaded by the real
``CheckpointLoaderSimple`` and detected as their family, run through the pack's nodes:
- the inversion, sampled back with the source prompt, reconstructs the video far better
  than chance, as on SD1.5;
- the v-prediction inversion's first step is the DDIM inversion formula written with v;
- SDXL's two tokenizers line up on the authors' prompts, and the word mappings are SD1's;
- the layer choices carried over by meaning: fused query lengths and blend level per family;
- a store of one family is refused by name on another;
- the style and local edit workflows (and the SDXL workflow) run through the real server.
"""
from __future__ import annotations

import math

import pytest
import torch

import workflow_files as wf

SRC = "a silver jeep driving down a curvy road in the countryside"
STYLE = "watercolor painting of a silver jeep driving down a curvy road in the countryside"
AUTHORS = "alphas_cumprod[0] (authors)"
FAMILIES = ("SD2", "SD2-v", "SDXL")
SIZE, FRAMES, STEPS = 64, 2, 8


@pytest.fixture(scope="module")
def loaded(family_models):
    """Family name -> (MODEL, CLIP, VAE), shared with the other modules (conftest's ``family_models``);
    the large one still held is released when this module ends, not carried into the next one."""
    yield family_models
    family_models.drop()


def video(model, seed: int = 12):
    """A smooth "video" latent (one image drifting over the frames) at the VAE's scale: the
    random VAE's own latents are too rough for a random UNet to invert (a trained one's are not)."""
    g = torch.Generator().manual_seed(seed)
    side = SIZE // 8
    base = torch.nn.functional.interpolate(torch.randn(1, 4, 4, 4, generator=g), size=(side + 4, side + 4),
                                           mode="bilinear")
    frames = torch.cat([base[..., i:i + side, 2:2 + side] for i in range(FRAMES)])
    return {"samples": frames / frames.std() / model.model.latent_format.scale_factor}


def rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("name,config,model_type,max_query", [
    ("SD2", "SD20", "EPS", 32 * 32), ("SD2-v", "SD20", "V_PREDICTION", 48 * 48), ("SDXL", "SDXL", "EPS", 64 * 64),
    ("SD1", "SD15", "EPS", 32 * 32)])
def test_checkpoints_load_as_their_family(pack, loaded, name, config, model_type, max_query):
    model = loaded(name)[0]
    assert type(model.model.model_config).__name__ == config and model.model.model_type.name == model_type
    family = pack.fatezero_attn.families.family_of(model)
    assert family.name == name and family.fuse_max_query == max_query
    # the blend layers sit at 1/4 of the latent in every family (SD1.5's 16x16 maps at 512x512)
    assert pack.fatezero_attn.families.sd_unet.blend_factor(model.model.diffusion_model) == 4


@pytest.mark.parametrize("name", FAMILIES + ("SD1",))
def test_inversion_reconstructs_the_video(node, loaded, name):
    model, clip, vae = loaded(name)
    source = node("CLIPTextEncode").encode(clip, SRC)[0]
    latent = video(model)
    inverted, store, sigmas, *_ = node("FateZeroDDIMInversion").invert(model, source, latent, STEPS, "middle", 0, True,
                                                                    AUTHORS, "recompute")
    assert store.info.model_family == name
    (sampler,) = node("KSamplerSelect").get_sampler("ddim")
    plain = node("FateZeroSpatioTemporalAttention").patch(model, "middle", 0, True)[0]
    back = node("SamplerCustom").sample(plain, False, 0, 1.0, source, source, sampler, sigmas, inverted)[0]["samples"]
    x = latent["samples"]
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5)) * x.std()
    err, random_err = rel(back, x), rel(noise + x.mean(), x)
    print(f"\n[{name}] reconstruction error {err:.4f} (random {random_err:.3f})")
    assert err < 0.05 * random_err


def test_v_prediction_inversion_steps_are_the_formula(node, loaded, pack):
    """Inversion call j on z_j at t_(j+1): eps = sqrt(a) v + sqrt(1 - a) z_j with a = a_(j+1), x0 =
    (z_j - sqrt(1 - a_j) eps) / sqrt(a_j), z_(j+1) = sqrt(a) x0 + sqrt(1 - a) eps, with v from the raw
    UNet. The first step (t = 1) barely moves the latent; a later one is checked too."""
    model, clip, vae = loaded("SD2-v")
    source = node("CLIPTextEncode").encode(clip, SRC)[0]
    latent = {"samples": video(model)["samples"][:1]}
    _, store, _, *_ = node("FateZeroDDIMInversion").invert(model, source, latent, STEPS, "per-frame", 0, False, AUTHORS,
                                                       "recompute")
    ms = model.get_model_object("model_sampling")
    s = [float(x) for x in store.sigmas]
    z = lambda j: store.unet_inputs[j] / math.sqrt(1 + s[j + 1] ** 2)  # call j's input is z_j presented at s_(j+1)
    assert torch.allclose(z(0), model.model.process_latent_in(latent["samples"]), atol=1e-5)
    for j in (0, 3):
        a_from, a_to = 1 / (1 + s[j] ** 2), 1 / (1 + s[j + 1] ** 2)
        with torch.no_grad():
            v = model.model.diffusion_model(z(j), ms.timestep(torch.tensor([s[j + 1]])), context=source[0][0]).float()
        eps = math.sqrt(a_to) * v + math.sqrt(1 - a_to) * z(j)
        x0 = (z(j) - math.sqrt(1 - a_from) * eps) / math.sqrt(a_from)
        want = math.sqrt(a_to) * x0 + math.sqrt(1 - a_to) * eps
        torch.testing.assert_close(z(j + 1), want, rtol=1e-4, atol=1e-4)
    assert rel(z(4), z(3)) > 1e-2, "the step moved nothing: the check would prove nothing"


AUTHORS_PROMPTS = [  # the authors' example edits (source, target)
    (SRC, STYLE), ("a brown bear walking on the rock against a wall", "a red tiger walking on the rock against a wall"),
    ("a black swan with a red beak swimming in a river near a wall and bushes",
     "a white duck with a yellow beak swimming in a river near a wall and bushes"),
    ("a silver jeep driving down a curvy road in the countryside",
     "a Porsche car driving down a curvy road in the countryside")]


@pytest.mark.parametrize("source,target", AUTHORS_PROMPTS)
def test_sdxl_tokenizers_line_up_on_the_authors_prompts(pack, loaded, source, target):
    from importlib import import_module
    common = import_module(pack.__name__ + ".nodes.common")
    clip = loaded("SDXL")[1]
    assert hasattr(clip.tokenizer, "clip_g") and hasattr(clip.tokenizer, "clip_l")
    assert common.text_window(clip) == common.text_window(loaded("SD1")[1]) == pack.fatezero_attn.edit.alignment.CLIP_WINDOW
    sd1_clip = loaded("SD1")[1]
    for text in (source, target):
        words, tokens = common.prompt_words(clip, text, "test", "prompt")
        assert (words, tokens) == common.prompt_words(sd1_clip, text, "test", "prompt")
        # the 77 positions ComfyUI encodes with each tokenizer hold the same words
        encoded = clip.tokenize(text)
        ids = {k: [t for t, _ in v[0]] for k, v in encoded.items()}
        flat = [t for w in tokens for t in w]
        assert ids["l"][1:1 + len(flat)] == ids["g"][1:1 + len(flat)] == flat


def test_the_prediction_type_is_the_models_as_patched(node, loaded, pack):
    """ModelSamplingDiscrete v_prediction on an SD 2.x MODEL makes it SD2-v (768 layers); a
    continuous EDM schedule is not one FateZero's DDIM inversion walks: refused by name."""
    family_of = pack.fatezero_attn.families.family_of
    model, clip, _ = loaded("SD2")
    (as_v,) = node("ModelSamplingDiscrete").patch(model, "v_prediction", False)
    assert family_of(model).name == "SD2" and family_of(as_v).name == "SD2-v"
    (edm,) = node("ModelSamplingContinuousEDM").patch(loaded("SD1")[0], "v_prediction", 120.0, 0.002)
    assert family_of(edm) is None
    source = node("CLIPTextEncode").encode(loaded("SD1")[1], SRC)[0]
    with pytest.raises(ValueError, match=r"FateZero DDIM Inversion: 'model' \(BaseModel, sampling .*\) is not an SD1.x, SD2.x or SDXL"):
        node("FateZeroDDIMInversion").invert(edm, source, video(edm), 2, "middle", 0, True, AUTHORS, "recompute")


def test_an_older_store_of_another_family_is_refused(node, loaded, pack, tmp_path):
    """Stores before format 5 recorded no family: only SD1 ones (768-wide context) load."""
    import json
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    model, clip, _ = loaded("SD2")
    source = node("CLIPTextEncode").encode(clip, SRC)[0]
    _, store, _, *_ = node("FateZeroDDIMInversion").invert(model, source, video(model), 2, "middle", 0, True, AUTHORS,
                                                       "recompute")
    store_file = pack.fatezero_attn.store.store_file
    store_file.save_store(store, tmp_path / "sd2.safetensors")
    assert store_file.load_store(tmp_path / "sd2.safetensors").info.model_family == "SD2"
    with safe_open(str(tmp_path / "sd2.safetensors"), framework="pt") as f:
        meta = f.metadata()
    info = json.loads(meta["fatezero_store"])
    for key in ("model_family", "fuse_max_query", "window"):
        info.pop(key)
    info["format_version"] = 3
    save_file(load_file(str(tmp_path / "sd2.safetensors")), str(tmp_path / "old.safetensors"),
              metadata={"fatezero_store": json.dumps(info)})
    with pytest.raises(ValueError, match="1024-wide text context: older versions of the pack recorded no model family"):
        store_file.load_store(tmp_path / "old.safetensors")


def test_an_embedding_that_shifts_one_encoders_positions_is_refused(node, pack, family_checkpoints, tmp_path,
                                                                       no_family_model_held):
    """An SDXL embedding with 3 CLIP-L vectors and 2 CLIP-G vectors: word by word the prompt
    tokenizes alike, but ComfyUI's encoders would see shifted positions."""
    import folder_paths
    from importlib import import_module
    from safetensors.torch import save_file
    save_file({"clip_l": torch.randn(3, 768), "clip_g": torch.randn(2, 1280)}, str(tmp_path / "uneven.safetensors"))
    folder_paths.add_model_folder_path("embeddings", str(tmp_path))
    clip = node("CheckpointLoaderSimple").load_checkpoint(family_checkpoints["SDXL"])[1]  # sees the embedding
    common = import_module(pack.__name__ + ".nodes.common")
    common.prompt_words(clip, SRC, "test", "prompt")  # no embedding: fine
    with pytest.raises(ValueError, match="'prompt' reaches CLIP with other tokens .* \\(encoder g, l: "):
        common.prompt_words(clip, "a embedding:uneven jeep on a road", "test", "prompt")


@pytest.mark.parametrize("family", ["SD1", "SDXL"])
@pytest.mark.parametrize("prompt", ["a (silver:1.2) jeep driving down a curvy road", "a silver jeep (driving) down a road",
                                    "a embedding:even jeep on a road"])
def test_prompt_weights_and_embeddings_are_refused_on_clip(prompt, family, node, pack, family_checkpoints, tmp_path,
                                                          no_family_model_held):
    """ComfyUI strips the weight syntax and puts an embedding's vectors in a word's place, so the
    words would land on other positions than FateZero maps; every encoder sees the same shift, so
    only the check of the words' tokens one by one catches it. Plain punctuation and ComfyUI's escaped
    brackets pass."""
    import folder_paths
    from importlib import import_module
    from safetensors.torch import save_file
    save_file({"clip_l": torch.randn(2, 768), "clip_g": torch.randn(2, 1280)}, str(tmp_path / "even.safetensors"))
    folder_paths.add_model_folder_path("embeddings", str(tmp_path))
    clip = node("CheckpointLoaderSimple").load_checkpoint(family_checkpoints[family])[1]  # sees the embedding
    assert any(not isinstance(t[0], int) for t in clip.tokenize("a embedding:even jeep")[next(iter(clip.tokenize("a")))][0])
    common = import_module(pack.__name__ + ".nodes.common")
    common.prompt_words(clip, "a silver jeep, driving down a curvy road.", "test", "prompt")
    common.prompt_words(clip, r"a silver jeep \(driving\) down a road", "test", "prompt")  # escaped: literal brackets
    with pytest.raises(ValueError, match="test: 'prompt' reaches CLIP with other tokens than its words one by one"):
        common.prompt_words(clip, prompt, "test", "prompt")


def test_a_store_of_another_family_is_refused(node, loaded):
    model, clip, vae = loaded("SD1")
    source = node("CLIPTextEncode").encode(clip, SRC)[0]
    _, store, _, *_ = node("FateZeroDDIMInversion").invert(model, source, video(model), 2, "middle", 0, True, AUTHORS,
                                                       "recompute")
    sdxl, sdxl_clip, _ = loaded("SDXL")
    with pytest.raises(ValueError, match=r"'model' is of family SDXL and the attention store was inverted with a model of family SD1"):
        node("FateZeroAttentionFusion").patch(sdxl, store, clip, SRC, STYLE, 0.8, 0.8, "auto", "", "")


# -- the workflows on the server -----------------------------------------------------------
@pytest.mark.parametrize("workflow", ["fatezero_style_edit", "fatezero_local_edit"])
@pytest.mark.parametrize("name", FAMILIES)
def test_edit_workflows_run_on_each_family(server, family_checkpoints, name, workflow):
    build = wf.build_module()
    api = build.resize(wf.load(wf.api_path(workflow)), ckpt_name=family_checkpoints[name], width=SIZE, height=SIZE,
                       frames=FRAMES, steps=3, prefix=f"fatezero_test_{name}_{workflow}/")
    entry = server.run(api, timeout=900)
    assert entry["status"]["status_str"] == "success", entry["status"]["messages"]
    saved = [o for o in entry["outputs"].values() if "images" in o or "videos" in o or "animated" in o]
    assert saved, entry["outputs"]


def test_sdxl_workflow_runs_on_the_sdxl_checkpoint(server, family_checkpoints):
    build = wf.build_module()
    api = build.resize(wf.load(wf.api_path("fatezero_sdxl_style_edit")), ckpt_name=family_checkpoints["SDXL"],
                       width=SIZE, height=SIZE, frames=FRAMES, steps=3, prefix="fatezero_test_sdxl/")
    entry = server.run(api, timeout=900)
    assert entry["status"]["status_str"] == "success", entry["status"]["messages"]
