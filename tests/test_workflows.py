"""The shipped example workflows (workflows/*.json, workflows/api/*_api.json) on a real server.

- every API file is valid for the running server's /object_info;
- every API file runs through /prompt on the small random SD1.5 checkpoint and the real
  bikes clip (shrunk by the test: 128x128, 4 frames, 3 steps), and its saved video (and
  mask preview) decode with the right frame count and size;
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
        # the negative prompt is empty
        assert api[ks["negative"][0]]["inputs"]["text"] == ""
    blend, = [n["inputs"] for n in wf.load(wf.api_path("fatezero_local_edit")).values()
              if n["class_type"] == "FateZeroBlendMask"]
    assert (blend["blend_words"], blend["tau"]) == ("silver, jeep", 0.3)


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


@pytest.mark.parametrize("name", wf.NAMES)
def test_workflow_runs_on_the_server(name, server, checkpoint_name, object_info, build):
    api = build.resize(wf.load(wf.api_path(name)), ckpt_name=checkpoint_name, **TEST_SIZE,
                       prefix=f"fatezero_test_{name}/")
    assert wf.validate_api(api, object_info) == []
    entry = server.run(api, timeout=900)

    save_video = next(k for k, n in api.items() if n["class_type"] == "SaveVideo")
    videos = _saved(server, entry, save_video)
    assert len(videos) == 1 and videos[0].suffix == ".mp4"
    frames, fps = _video_frames(videos[0])
    assert len(frames) == TEST_SIZE["frames"]
    assert frames[0].shape == (TEST_SIZE["height"], TEST_SIZE["width"], 3)
    assert fps == pytest.approx(25.0, abs=0.01), "Create Video should take the clip's rate from Load Video"
    assert all(np.isfinite(f).all() for f in frames)

    masks = [k for k, n in api.items() if n["class_type"] == "SaveImage"]
    if name == "fatezero_local_edit":
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
