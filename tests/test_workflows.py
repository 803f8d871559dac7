"""The shipped example workflows (workflows/*.json, workflows/api/*_api.json) on a real server.

- every API file is valid for the running server's /object_info;
- every API file runs through /prompt on the small random SD1.5 checkpoint (and the random
  ControlNet that fits it) and the real bikes clip (shrunk by the test: 128x128, 4 frames,
  3 steps), and its saved video (and mask preview) decode with the right frame count and size;
- the ControlNet workflow steers the sampler, not the inversion, and changes the edit;
- every UI file describes the same graph as its API twin (node ids, types, titles, links,
  widget values mapped through /object_info's input order);
- the files are what workflows/build.py writes, and ComfyUI offers the UI files (only) as
  the pack's templates.
"""
from __future__ import annotations

import copy
import json
import urllib.request

import av
import numpy as np
import pytest
from PIL import Image

import workflow_files as wf

TEST_SIZE = dict(width=128, height=128, frames=4, steps=3)
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


def test_authors_settings_are_shipped():
    """512x512, 8 frames, 50 steps, CFG 7.5 and the settings of FATEZERO.md section 6."""
    want = {
        "fatezero_style_edit": dict(cross=0.8, self_=0.8, mapping="refine", reweight="watercolor:10",
                                    target="watercolor painting of a silver jeep driving down a curvy road in the countryside"),
        "fatezero_attribute_edit": dict(cross=0.7, self_=0.7, mapping="replace", reweight="",
                                        target="a red tiger walking on the rock against a wall"),
        "fatezero_local_edit": dict(cross=0.7, self_=0.7, mapping="replace", reweight="",
                                    target="a red jeep driving down a curvy road in the countryside"),
    }
    want["fatezero_controlnet_local_edit"] = want["fatezero_local_edit"]
    assert sorted(want) == sorted(wf.NAMES)
    for name, w in want.items():
        api = wf.load(wf.api_path(name))
        by_type = {}
        for node in api.values():
            by_type.setdefault(node["class_type"], []).append(node["inputs"])
        video = by_type["FateZeroLoadVideo"][0]
        assert (video["video"], video["width"], video["height"], video["frame_count"]) == ("bikes.mp4", 512, 512, 8)
        inv, = by_type["FateZeroDDIMInversion"]
        ks, = by_type["KSamplerAdvanced"]
        assert inv["steps"] == ks["steps"] == 50
        assert (ks["add_noise"], ks["cfg"], ks["sampler_name"], ks["scheduler"], ks["start_at_step"],
                ks["end_at_step"], ks["return_with_leftover_noise"]) == ("disable", 7.5, "ddim", "ddim_uniform", 0, 10000, "disable")
        fusion, = by_type["FateZeroAttentionFusion"]
        assert (fusion["cross_replace_steps"], fusion["self_replace_steps"], fusion["mapping"], fusion["reweight"]) == \
            (w["cross"], w["self_"], w["mapping"], w["reweight"])
        texts = {n["inputs"]["value"] for n in api.values() if n["class_type"] == "PrimitiveStringMultiline"}
        assert w["target"] in texts
        # one text node feeds the encoder and the FateZero nodes: the source prompt cannot differ
        src = inv["source_conditioning"][0]
        assert fusion["source_prompt"] == api[src]["inputs"]["text"]
        # the negative prompt is empty (through Apply ControlNet where there is one)
        negative = api[ks["negative"][0]]
        if negative["class_type"] == "ControlNetApplyAdvanced":
            negative = api[negative["inputs"]["negative"][0]]
        assert negative["inputs"]["text"] == ""
    for name in LOCAL_EDITS:
        blend, = [n["inputs"] for n in wf.load(wf.api_path(name)).values() if n["class_type"] == "FateZeroBlendMask"]
        assert (blend["blend_words"], blend["tau"]) == ("silver, jeep", 0.3)


def test_controlnet_steers_the_edit_not_the_inversion():
    """Source frames -> Apply ControlNet (target and negative prompts) -> the sampler; the
    inversion keeps the plain source encoding; fusion and inversion take the same MODEL."""
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
    _, ks = one("KSamplerAdvanced")
    assert cnet_loader["control_net_name"].endswith(".pth") and "sd15" in cnet_loader["control_net_name"]
    assert (cnet["control_net"], cnet["image"]) == ([loader, 0], [video, 0]), "the hint is the loaded source frames"
    assert (cnet["strength"], cnet["start_percent"], cnet["end_percent"]) == (0.8, 0.0, 1.0)
    assert "vae" not in cnet, "an SD1.5 ControlNet takes no VAE"
    assert (ks["positive"], ks["negative"]) == ([apply_id, 0], [apply_id, 1])
    # the encoders read the same text nodes as the fusion node
    target, negative = api[cnet["positive"][0]], api[cnet["negative"][0]]
    assert target["class_type"] == "CLIPTextEncode" and target["inputs"]["text"] == fusion["target_prompt"]
    assert negative["class_type"] == "CLIPTextEncode" and negative["inputs"]["text"] == ""
    source = api[inv["source_conditioning"][0]]
    assert source["class_type"] == "CLIPTextEncode", "the inversion takes the plain source encoding"
    assert source["inputs"]["text"] == fusion["source_prompt"]
    assert fusion["model"] == inv["model"] and api[inv["model"][0]]["class_type"] == "CheckpointLoaderSimple"


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
    ks = next(k for k, n in broken.items() if n["class_type"] == "KSamplerAdvanced")
    broken[ks]["inputs"]["steps"] = 0
    broken["99"] = {"class_type": "FateZeroNoSuchNode", "inputs": {}}
    problems = "\n".join(wf.validate_api(broken, object_info))
    for expected in ("'swap' is not one of", "'cross_replace_steps' is missing", "wants FATEZERO_BLEND",
                     "below the minimum 1", "no such node type"):
        assert expected in problems


@pytest.mark.parametrize("name", wf.NAMES)
def test_ui_file_and_api_file_are_the_same_graph(name, object_info):
    ui = wf.load(wf.ui_path(name))
    api = wf.load(wf.api_path(name))
    assert wf.graph_differences(wf.ui_graph(ui, object_info), wf.api_graph(api, object_info)) == []
    notes = [n for n in ui["nodes"] if n["type"] == "Note"]
    assert len(notes) == 1 and len(notes[0]["widgets_values"][0]) > 1000, "the UI file needs its Note"
    assert ui["groups"], "the UI file needs its groups"
    assert ui["last_node_id"] == max(n["id"] for n in ui["nodes"])
    assert ui["last_link_id"] == max(link[0] for link in ui["links"])


def test_ui_comparison_catches_drift(object_info):
    ui = wf.load(wf.ui_path("fatezero_style_edit"))
    api = wf.api_graph(wf.load(wf.api_path("fatezero_style_edit")), object_info)
    ks = next(n for n in ui["nodes"] if n["type"] == "KSamplerAdvanced")
    ks["widgets_values"][3] = 49          # steps, after noise_seed and its control value
    diffs = wf.graph_differences(wf.ui_graph(ui, object_info), api)
    assert diffs == ["node 11 (KSamplerAdvanced) input 'steps': UI 49 != API 50"]
    ks["widgets_values"].pop(2)           # drop the control_after_generate value
    with pytest.raises(AssertionError, match="control_after_generate"):
        wf.ui_graph(ui, object_info)


def test_server_offers_the_ui_files_as_templates(server):
    templates = server.get("/workflow_templates")
    assert sorted(templates.get("ComfyUI-FateZero", [])) == sorted(wf.NAMES)
    with urllib.request.urlopen(f"{server.url}/api/workflow_templates/ComfyUI-FateZero/fatezero_style_edit.json") as r:
        assert json.loads(r.read()) == wf.load(wf.ui_path("fatezero_style_edit"))


# -- running the workflows ---------------------------------------------------------------------
def _saved(server, entry, node_id):
    items = entry["outputs"][node_id]["images"]
    return [server.output_dir / item["subfolder"] / item["filename"] for item in items]


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
                               control_net_name=controlnet_name, **TEST_SIZE, prefix=f"fatezero_test_{name}/")
            assert wf.validate_api(api, object_info) == []
            done[name] = api, server.run(api, timeout=900)
        return done[name]
    return run_once


def _video_of(server, api, entry):
    save_video = next(k for k, n in api.items() if n["class_type"] == "SaveVideo")
    videos = _saved(server, entry, save_video)
    assert len(videos) == 1 and videos[0].suffix == ".mp4"
    return _video_frames(videos[0])


@pytest.mark.parametrize("name", wf.NAMES)
def test_workflow_runs_on_the_server(name, server, run):
    api, entry = run(name)
    frames, fps = _video_of(server, api, entry)
    assert len(frames) == TEST_SIZE["frames"]
    assert frames[0].shape == (TEST_SIZE["height"], TEST_SIZE["width"], 3)
    assert fps == pytest.approx(25.0, abs=0.01), "Create Video should take the clip's rate from Load Video"
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
