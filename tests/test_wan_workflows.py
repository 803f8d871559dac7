"""The shipped Wan workflows (issue 24) on the real test server.

Each runs through ``/prompt`` at test size (5 frames = 2 latent frames, 64x64, 3 steps) on the
tests' tiny random Wan files: ``UNETLoader`` and ``VAELoader`` read them from the server's model
folders; the text encoder (and the 5B model's Wan 2.2 VAE) come from test-only loader nodes in the
core loaders' place (``tests/comfy_test_nodes/wan_text_encoder.py`` says why). The graphs edit
with SamplerCustomAdvanced on the inversion's noise, sigmas and latent; the A14B graph splits the
sigmas at the inversion's expert_split_step between its two experts' samplers. The 4-step A14B
graph (issue 34) is ComfyUI's A14B T2V template with the lightx2v LoRAs, the FateZero nodes put in:
it runs at its own 4 steps, its LoRA nodes loading the tests' random Wan LoRA. The first-frame
graph (issue 35) is ComfyUI's A14B I2V template so: it runs on the tiny Wan 2.2 I2V expert, and
its Load Image gets an edited first frame the test writes into the server's input folder. The 5B
first-frame graph is ComfyUI's 5B TI2V template so, its start images in the latent
(Wan22ImageToVideoLatent): it runs on the tiny 5B model with the tiny Wan 2.2 VAE, and the same
graph with the inverted latent as the sampler's latent_image is refused by name.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import workflow_files as wf
from test_workflows import _only, _video_of, clip_rate

WAN_SIZE = dict(width=64, height=64, frames=5, steps=3)
FEW_STEP = "fatezero_wan22_a14b_lightx2v_4step_edit"
FIRST_FRAME = "fatezero_wan22_a14b_i2v_first_frame_edit"
FOUR_STEP = (FEW_STEP, FIRST_FRAME)  # ComfyUI's A14B templates with the lightx2v LoRAs: 4 steps, 2 + 2
TI2V_FIRST_FRAME = "fatezero_wan22_5b_ti2v_first_frame_edit"
UNET = {"fatezero_wan22_5b_local_edit": "wan22_5b", FIRST_FRAME: "wan22_i2v", TI2V_FIRST_FRAME: "wan22_5b"}  # else "wan21"
# ComfyUI's Wan 2.2 A14B templates (comfyui-workflow-templates-json 0.1.123, video_wan2_2_14B_t2v.json;
# comfyui-workflow-templates-media-video 0.3.12, video_wan2_2_14B_i2v.json): each loader's file, folder and
# download, as its loader nodes' properties.models list them, and the experts' switch point
HF = "https://huggingface.co/Comfy-Org/{}/resolve/main/split_files/{}/{}"
SHARED_FILES = {
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors": ("Wan_2.1_ComfyUI_repackaged", "text_encoders"),
    "wan_2.1_vae.safetensors": ("Wan_2.2_ComfyUI_Repackaged", "vae"),
}
TEMPLATES = {
    FEW_STEP: (0.875, {
        "high": ("wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors",
                 "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors"),
        "low": ("wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors",
                "wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors")}),
    FIRST_FRAME: (0.9, {
        "high": ("wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors",
                 "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors"),
        "low": ("wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors",
                "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors")}),
}


def write_edited_first_frame(folder, name: str) -> None:
    """What a user's image editor made of the clip's first frame: a smooth random picture of
    another size and shape than the test clip's frames (WanImageToVideo scales and crops it)."""
    low = np.random.default_rng(5).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    Image.fromarray(low).resize((96, 48), Image.BILINEAR).save(folder / name)


@pytest.fixture(scope="module")
def build():
    return wf.build_module()


@pytest.fixture(scope="module")
def run_wan(server, wan_files, build):
    """run(name) -> (test-size API graph, /history entry), each Wan workflow run once."""
    object_info = server.get("/object_info")
    done = {}

    def run_once(name):
        if name not in done:
            size = dict(WAN_SIZE, steps=4) if name in FOUR_STEP else WAN_SIZE  # its own 2 + 2 steps
            api = build.resize(wf.load(wf.api_path(name)), unet_name=wan_files[UNET.get(name, "wan21")],
                               vae_name=wan_files["vae"], lora_name=wan_files["lora"], prefix=f"fatezero_test_{name}/",
                               **size)
            for node in api.values():
                if node["class_type"] == "CLIPLoader":
                    node["class_type"] = "FateZeroTestWanCLIPLoader"
                elif node["class_type"] == "VAELoader" and "5b" in name:
                    node["class_type"] = "FateZeroTestWan22VAELoader"
                elif node["class_type"] == "LoadImage":
                    write_edited_first_frame(server.input_dir, node["inputs"]["image"])
            assert wf.validate_api(api, object_info) == []
            done[name] = api, server.run(api, timeout=900)
        return done[name]
    return run_once


@pytest.mark.parametrize("name", wf.WAN_NAMES)
def test_wan_workflow_runs_on_the_server(name, server, run_wan):
    api, entry = run_wan(name)
    frames, fps = _video_of(server, api, entry)
    assert len(frames) == WAN_SIZE["frames"] and frames[0].shape == (WAN_SIZE["height"], WAN_SIZE["width"], 3)
    assert fps == pytest.approx(clip_rate(api), abs=0.01), "Create Video should take the clip's rate from Load Video"
    masks = [k for k, n in api.items() if n["class_type"] == "SaveImage"]
    assert len(masks) == (1 if "local" in name else 0)
    if any(n["class_type"] == "LoraLoaderModelOnly" for n in api.values()):
        assert "lora key not loaded" not in server.log(), "the LoRA should patch the model, every key of it"


@pytest.mark.parametrize("name", wf.WAN_NAMES)
def test_wan_workflow_edits_from_the_inverted_noise(name):
    """Core loaders only; the decoded latent comes from SamplerCustomAdvanced fed by the inversion
    (noise, sigmas, latent) with euler and a CFGGuider on a fusion node's MODEL; the frame count is
    4n+1; the SD-only settings are off."""
    api = wf.load(wf.api_path(name))
    kinds = {n["class_type"] for n in api.values()}
    assert {"UNETLoader", "CLIPLoader", "VAELoader"} <= kinds and "CheckpointLoaderSimple" not in kinds
    clip = api[_only(api, "CLIPLoader")]["inputs"]
    assert clip["type"] == "wan"
    inv = _only(api, "FateZeroDDIMInversion")
    settings = api[inv]["inputs"]
    assert (settings["temporal_mode"], settings["video_groupnorm"], settings["window"]) == ("per-frame", False, 0)
    assert (api[_only(api, "FateZeroLoadVideo")]["inputs"]["frame_count"] - 1) % 4 == 0
    decode = api[_only(api, "VAEDecode")]["inputs"]["samples"]
    last = api[decode[0]]
    assert last["class_type"] == "SamplerCustomAdvanced" and decode[1] == 0
    samplers = [k for k, n in api.items() if n["class_type"] == "SamplerCustomAdvanced"]
    first = samplers[0] if len(samplers) == 1 else next(
        k for k in samplers if api[k]["inputs"]["noise"] == [inv, 3])
    assert api[first]["inputs"]["noise"] == [inv, 3]
    if "start_image_latent" in settings:  # TI2V 5B's first-frame edit: the edited frame's start-image latent
        assert api[api[first]["inputs"]["latent_image"][0]]["class_type"] == "Wan22ImageToVideoLatent"
    else:
        assert api[first]["inputs"]["latent_image"] == [inv, 0]
    for k in samplers:
        select = api[api[k]["inputs"]["sampler"][0]]
        assert select["inputs"] == {"sampler_name": "euler"}
        guider = api[api[k]["inputs"]["guider"][0]]
        assert api[guider["inputs"]["model"][0]]["class_type"] == "FateZeroAttentionFusion"
    if len(samplers) == 1:
        assert api[first]["inputs"]["sigmas"] == [inv, 2]
    else:  # A14B: the high-noise sampler on SplitSigmas' high_sigmas, the low-noise one continues
        split = _only(api, "SplitSigmas")
        assert api[split]["inputs"] == {"sigmas": [inv, 2], "step": [inv, 4]}
        low = next(k for k in samplers if k != first)
        assert api[first]["inputs"]["sigmas"] == [split, 0] and api[low]["inputs"]["sigmas"] == [split, 1]
        assert api[low]["inputs"]["latent_image"] == [first, 0]
        assert api[api[low]["inputs"]["noise"][0]]["class_type"] == "DisableNoise"
        assert "model_high_noise" in settings


@pytest.mark.parametrize("name", FOUR_STEP)
def test_four_step_workflow_is_the_a14b_template_with_fatezero(pack, name):
    """The template's graph (tests/test_wan_few_step.py runs it at the node level): each expert's
    fp8 file -> its lightx2v 4-step LoRA at strength 1 -> ModelSamplingSD3 shift 5 -> the FateZero
    nodes; CFG 1, euler, 4 steps split at the inversion's expert_split_step, the few-step
    fixed-point iterations, the template's expert switch point; each loader offers the template's
    download of its file."""
    boundary, files = TEMPLATES[name]
    api = wf.load(wf.api_path(name))
    inv = api[_only(api, "FateZeroDDIMInversion")]["inputs"]
    assert (inv["steps"], inv["fixed_point_iterations"]) == (4, pack.fatezero_attn.defaults.WAN_FEW_STEP_ITERATIONS)
    assert inv["flow_inversion"] == "fixed-point" and inv["expert_boundary"] == boundary
    experts = {"high": inv["model_high_noise"][0], "low": inv["model"][0]}
    for which, shift_id in experts.items():
        shift = api[shift_id]
        assert shift["class_type"] == "ModelSamplingSD3" and shift["inputs"]["shift"] == 5.0
        lora = api[shift["inputs"]["model"][0]]
        assert lora["class_type"] == "LoraLoaderModelOnly" and lora["inputs"]["strength_model"] == 1.0
        loader = api[lora["inputs"]["model"][0]]
        assert (loader["inputs"]["unet_name"], lora["inputs"]["lora_name"]) == files[which]
    fusions = [k for k, n in api.items() if n["class_type"] == "FateZeroAttentionFusion"]
    assert sorted(api[k]["inputs"]["model"][0] for k in fusions) == sorted(experts.values())
    guiders = [n["inputs"] for n in api.values() if n["class_type"] == "CFGGuider"]
    assert len(guiders) == 2 and all(g["cfg"] == 1.0 for g in guiders)
    assert api[_only(api, "SplitSigmas")]["inputs"]["step"] == [_only(api, "FateZeroDDIMInversion"), 4]
    ui = wf.load(wf.ui_path(name))
    offered = {}
    for node in ui["nodes"]:
        for model in node["properties"].get("models", []):
            assert model["name"] in node["widgets_values"], f"node {node['id']} offers a file it does not load"
            offered[model["name"]] = (model["url"], model["directory"])
    template = {**{unet: ("Wan_2.2_ComfyUI_Repackaged", "diffusion_models") for unet, _ in files.values()},
                **{lora: ("Wan_2.2_ComfyUI_Repackaged", "loras") for _, lora in files.values()}, **SHARED_FILES}
    assert offered == {file: (HF.format(repo, folder, file), folder) for file, (repo, folder) in template.items()}


def _source(api: dict, link: list) -> tuple[str, dict]:
    """The class and inputs of the node ``link`` comes from."""
    node = api[link[0]]
    return node["class_type"], node["inputs"]


def test_first_frame_workflow_conditions_the_source_on_the_clip_and_the_edit_on_the_edited_frame():
    """Issue 35's graph: the inversion's source_conditioning is WanImageToVideo's positive of the
    source prompt and the loaded clip's first frame (ImageFromBatch 0, 1); both experts' guiders
    take the positive and negative of a second WanImageToVideo of the target prompt and the frame
    Load Image loads; both WanImageToVideo get width, height and length from the loaded frames,
    no CLIP vision (Wan 2.2 I2V has none), and the same negative prompt."""
    api = wf.load(wf.api_path(FIRST_FRAME))
    video = _only(api, "FateZeroLoadVideo")
    inv = api[_only(api, "FateZeroDDIMInversion")]["inputs"]
    assert inv["source_conditioning"][1] == 0 and inv["latent"] == [_only(api, "VAEEncode"), 0]
    kind, source = _source(api, inv["source_conditioning"])
    assert kind == "WanImageToVideo"
    guiders = [n["inputs"] for n in api.values() if n["class_type"] == "CFGGuider"]
    edit_id = guiders[0]["positive"][0]
    assert all((g["positive"], g["negative"]) == ([edit_id, 0], [edit_id, 1]) for g in guiders)
    edit = api[edit_id]["inputs"]
    assert edit_id != inv["source_conditioning"][0] and api[edit_id]["class_type"] == "WanImageToVideo"
    for inputs, prompt in ((source, "Source prompt"), (edit, "Target prompt")):
        kind, encode = _source(api, inputs["positive"])
        assert kind == "CLIPTextEncode" and api[encode["text"][0]]["_meta"]["title"].startswith(prompt)
        assert "clip_vision_output" not in inputs and inputs["batch_size"] == 1
        size = _source(api, inputs["width"])
        assert size == ("GetImageSize", {"image": [video, 0]})
        assert [inputs[k] for k in ("width", "height", "length")] == [[inputs["width"][0], i] for i in range(3)]
    assert source["negative"] == edit["negative"] and source["vae"] == edit["vae"]
    assert _source(api, source["start_image"]) == ("ImageFromBatch", {"image": [video, 0], "batch_index": 0, "length": 1})
    kind, load = _source(api, edit["start_image"])
    assert kind == "LoadImage" and load["image"] == "fatezero_edited_first_frame.png" and edit["start_image"][1] == 0
    note, = [n["widgets_values"][0] for n in wf.load(wf.ui_path(FIRST_FRAME))["nodes"] if n["type"] == "Note"]
    for named in ("Qwen-Image-Edit 2511", "Flux 2 Klein", "fatezero_edited_first_frame.png", "DisableNoise",
                  "random"):
        assert named in note


def ti2v_template() -> dict:
    """ComfyUI's own Wan 2.2 TI2V 5B template (video_wan2_2_5B_ti2v.json of the
    comfyui-workflow-templates-media-video package ComfyUI pins; 0.3.12 here): node type -> its nodes."""
    import importlib.util
    spec = importlib.util.find_spec("comfyui_workflow_templates_media_video")
    assert spec is not None, "comfyui-workflow-templates-media-video is not installed (ComfyUI's requirements)"
    path = Path(list(spec.submodule_search_locations)[0]) / "templates" / "video_wan2_2_5B_ti2v.json"
    out: dict = {}
    for node in wf.load(path)["nodes"]:
        out.setdefault(node["type"], []).append(node)
    return out


def test_5b_first_frame_workflow_is_the_ti2v_template_with_fatezero():
    """The template's files (each loader's name, folder and download), shift, steps, CFG,
    scheduler, width, height and batch; the template's KSampler becomes the inversion's steps, a
    CFGGuider of its CFG and euler on the inversion's edit_sigmas (its 'simple' schedule)."""
    template = ti2v_template()
    api = wf.load(wf.api_path(TI2V_FIRST_FRAME))
    (sampler,), (shift,), (latent,) = template["KSampler"], template["ModelSamplingSD3"], template["Wan22ImageToVideoLatent"]
    _seed, _control, steps, cfg, _sampler_name, scheduler, denoise = sampler["widgets_values"]
    assert (scheduler, denoise) == ("simple", 1)  # what the inversion's edit_sigmas are (FLOW_SCHEDULER)
    inv = api[_only(api, "FateZeroDDIMInversion")]["inputs"]
    assert inv["steps"] == steps and api[inv["model"][0]]["inputs"]["shift"] == shift["widgets_values"][0]
    assert api[inv["model"][0]]["class_type"] == "ModelSamplingSD3"
    assert api[_only(api, "CFGGuider")]["inputs"]["cfg"] == cfg
    width, height, _length, batch = latent["widgets_values"]
    video = api[_only(api, "FateZeroLoadVideo")]["inputs"]
    assert (video["width"], video["height"]) == (width, height)
    ui = wf.load(wf.ui_path(TI2V_FIRST_FRAME))["nodes"]
    starts = [n["widgets_values"] for n in ui if n["type"] == "Wan22ImageToVideoLatent"]  # linked: width, height, length
    assert starts == [[width, height, video["frame_count"], batch]] * 2
    offered, shipped = {}, {}
    for kind in ("UNETLoader", "CLIPLoader", "VAELoader"):
        (node,) = template[kind]
        shipped[node["widgets_values"][0]] = node["properties"]["models"]
    for node in ui:
        if node["properties"].get("models"):
            offered[node["widgets_values"][0]] = node["properties"]["models"]
    assert offered == shipped


def test_5b_first_frame_workflow_puts_the_clips_frame_in_the_inversion_and_yours_in_the_sampler():
    """The inversion's latent is VAE Encode of the clip and its start_image_latent a
    Wan22ImageToVideoLatent of the clip's first frame (ImageFromBatch 0, 1); the sampler's
    latent_image is a second one, of the frame Load Image loads; both of the encoder's VAE, sized
    by Get Image Size of the loaded frames; the source prompt conditions the inversion plainly (no
    start image on the conditioning), the target prompt the guider. The Note says which goes where."""
    api = wf.load(wf.api_path(TI2V_FIRST_FRAME))
    video, encode = _only(api, "FateZeroLoadVideo"), _only(api, "VAEEncode")
    inv_id = _only(api, "FateZeroDDIMInversion")
    inv = api[inv_id]["inputs"]
    assert inv["latent"] == [encode, 0] and api[encode]["inputs"]["pixels"] == [video, 0]
    kind, source = _source(api, inv["start_image_latent"])
    assert kind == "Wan22ImageToVideoLatent" and inv["start_image_latent"][1] == 0
    sampler = api[_only(api, "SamplerCustomAdvanced")]["inputs"]
    kind, edit = _source(api, sampler["latent_image"])
    assert kind == "Wan22ImageToVideoLatent" and sampler["latent_image"][0] != inv["start_image_latent"][0]
    assert (sampler["noise"], sampler["sigmas"]) == ([inv_id, 3], [inv_id, 2])
    for inputs in (source, edit):
        assert inputs["vae"] == api[encode]["inputs"]["vae"]
        assert _source(api, inputs["width"]) == ("GetImageSize", {"image": [video, 0]})
        assert [inputs[k] for k in ("width", "height", "length")] == [[inputs["width"][0], i] for i in range(3)]
    assert _source(api, source["start_image"]) == ("ImageFromBatch", {"image": [video, 0], "batch_index": 0, "length": 1})
    kind, load = _source(api, edit["start_image"])
    assert kind == "LoadImage" and load["image"] == "fatezero_edited_first_frame.png" and edit["start_image"][1] == 0
    for link, prompt in ((inv["source_conditioning"], "Source prompt"),
                         (api[_only(api, "CFGGuider")]["inputs"]["positive"], "Target prompt")):
        kind, encoder = _source(api, link)
        assert kind == "CLIPTextEncode" and api[encoder["text"][0]]["_meta"]["title"].startswith(prompt)
    assert "WanImageToVideo" not in {n["class_type"] for n in api.values()}
    note, = [n["widgets_values"][0] for n in wf.load(wf.ui_path(TI2V_FIRST_FRAME))["nodes"] if n["type"] == "Note"]
    for named in ("start_image_latent", "latent_image", "VAE Encode", "Qwen-Image-Edit 2511", "Flux 2 Klein",
                  "fatezero_edited_first_frame.png", "random"):
        assert named in note


def test_5b_first_frame_workflow_refuses_the_inverted_latent_as_latent_image(server, run_wan):
    """The shipped graph ran (its start images kept); the same graph with inverted_latent as the
    sampler's latent_image (no start image kept) stops at the sampler, naming the fix."""
    api, _ = run_wan(TI2V_FIRST_FRAME)
    broken = copy.deepcopy(api)
    sampler = _only(broken, "SamplerCustomAdvanced")
    broken[sampler]["inputs"]["latent_image"] = [_only(broken, "FateZeroDDIMInversion"), 0]
    error = server.error_of(broken)
    assert error["node_id"] == sampler
    assert "keeping 1 latent frame" in error["exception_message"]
    assert "Wan22ImageToVideoLatent given the edited first frame" in error["exception_message"]
