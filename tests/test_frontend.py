"""The pack's UI-format workflows in ComfyUI's real frontend, in headless Chromium.

tests/frontend/load_workflows.mjs opens the frontend the test server serves (the
comfyui-frontend-package ComfyUI pins), loads each workflow the way a dropped file is
loaded, and reports what the page shows; this test judges the report:
- no node type is missing (no missing-nodes dialog, every type registered) and no node
  is marked as erroneous, no error toast, no script error while loading;
- a workflow whose loaders list their files in ``properties.models`` (the 4-step A14B one, as
  ComfyUI's template does) opens the missing-models dialog, which offers each of those files
  for download into its folder (the test server has none of them); no other dialog opens;
- the frontend turns each UI file into exactly the API file next to it (graphToPrompt),
  and its own re-serialisation is the same graph as the file;
- the pack's nodes sit in the node library under one top-level category, "FateZero";
- a workflow with a made-up node type IS reported as missing (the checks can fail).

Needs Debian's chromium (/usr/bin/chromium, or FATEZERO_CHROMIUM) and playwright-core in
.host/node (FATEZERO_NODE_DIR); scripts/setup_host.sh --with-frontend installs both. Without
them the test fails: a frontend check that cannot run is not a pass.

Screenshots go to test-artifacts/frontend/. FATEZERO_UPDATE_SCREENSHOT=1 also writes the
style workflow's screenshot, reduced to a palette PNG, to docs/screenshot.png.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import workflow_files as wf

PACK_DIR = wf.PACK_DIR
NODE_DIR = Path(os.environ.get("FATEZERO_NODE_DIR", PACK_DIR / ".host" / "node"))
CHROMIUM = Path(os.environ.get("FATEZERO_CHROMIUM", "/usr/bin/chromium"))
SCRIPT = PACK_DIR / "tests" / "frontend" / "load_workflows.mjs"
SHOTS = PACK_DIR / "test-artifacts" / "frontend"
FRONTEND_ONLY_INPUTS = {"video-preview"}  # the video_upload preview widget
SETUP_HINT = "run `bash scripts/setup_host.sh --with-frontend` (installs chromium with apt-get and playwright-core with npm)"


def _require_tools() -> str:
    node = shutil.which("node")
    problems = []
    if node is None:
        problems.append("node (Node.js) is not on PATH")
    if not CHROMIUM.exists():
        problems.append(f"{CHROMIUM} is missing")
    if not (NODE_DIR / "node_modules" / "playwright-core" / "package.json").exists():
        problems.append(f"playwright-core is not installed in {NODE_DIR}")
    if problems:
        pytest.fail("the frontend test cannot run: " + "; ".join(problems) + f". {SETUP_HINT}", pytrace=False)
    return node


def _run_frontend(server, files: list[Path], shots: Path) -> dict:
    node = _require_tools()
    cmd = [node, str(SCRIPT), "--url", server.url, "--node-dir", str(NODE_DIR), "--shots", str(shots),
           "--chromium", str(CHROMIUM), *map(str, files)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=PACK_DIR)
    if proc.returncode != 0:
        pytest.fail(f"load_workflows.mjs failed ({proc.returncode}):\n{proc.stderr[-4000:]}\n{proc.stdout[-2000:]}",
                    pytrace=False)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def report(server):
    SHOTS.mkdir(parents=True, exist_ok=True)
    return _run_frontend(server, [wf.ui_path(n) for n in wf.NAMES], SHOTS)


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


def _result(report, name):
    return next(r for r in report["workflows"] if Path(r["file"]).name == f"{name}.json")


@pytest.mark.parametrize("name", wf.NAMES)
def test_workflow_loads_without_missing_nodes_or_errors(report, name):
    r = _result(report, name)
    ui = wf.load(wf.ui_path(name))
    assert r["loadError"] is None
    assert r["missingTypes"] == []
    offered = [m for n in ui["nodes"] for m in n["properties"].get("models", [])]
    errors = r["errors"]
    if offered:
        assert len(r["dialogs"]) == 1, r["dialogs"]
        dialog = r["dialogs"][0]
        for model in offered:  # the dialog's row for a file: "<folder> / <file>", with its download
            assert f"{model['directory']} / {model['name']}" in dialog, dialog
        assert "not allowed" not in dialog and "Invalid directory" not in dialog, dialog
        # The dialog asks each download URL for the file's size; the page may reach only the test
        # server, so those requests are blocked (listed) and each logs an error.
        assert {m["url"] for m in offered} <= set(report["blocked"])
        errors = [e for e in errors if not e.startswith("console: Error fetching file size: TypeError: Failed to fetch")]
    else:
        assert r["dialogs"] == [], "a dialog opened on load (missing nodes?)"
    assert r["errorToasts"] == []
    assert errors == [], "script errors while loading the workflow"
    assert sorted((n["id"], n["type"]) for n in r["nodes"]) == sorted((n["id"], n["type"]) for n in ui["nodes"])
    assert [n for n in r["nodes"] if n["hasErrors"] or not n["registered"]] == []
    assert Path(r["screenshot"]).stat().st_size > 10_000


@pytest.mark.parametrize("name", wf.NAMES)
def test_frontend_makes_the_api_file_from_the_ui_file(report, name, object_info):
    r = _result(report, name)
    api = wf.load(wf.api_path(name))
    prompt = r["prompt"]
    for node in prompt.values():
        # Once a clip's preview is shown, the frontend also sends its preview widget's value; the
        # server ignores inputs a node does not declare. Only that extra is allowed.
        declared = wf.input_specs(object_info[node["class_type"]])
        extra = {k for k in node["inputs"] if k not in declared}
        assert extra <= FRONTEND_ONLY_INPUTS, f"{node['class_type']}: undeclared inputs {extra}"
        node["inputs"] = {k: v for k, v in node["inputs"].items() if k in declared}
    assert wf.graph_differences(wf.api_graph(prompt, object_info), wf.api_graph(api, object_info),
                                "frontend", "API file") == []
    # what the frontend would save again is the same graph as the shipped file
    assert wf.graph_differences(wf.ui_graph(r["serialized"], object_info),
                                wf.ui_graph(wf.load(wf.ui_path(name)), object_info), "re-saved", "file") == []


def test_pack_nodes_are_in_one_library_category(report, server, pack):
    assert "FateZero" in report["libraryTopLevel"]
    displays = {pack.NODE_DISPLAY_NAME_MAPPINGS[k] for k in pack.NODE_CLASS_MAPPINGS}
    assert {n["type"] for n in report["packNodes"]} == set(pack.NODE_CLASS_MAPPINGS)
    assert {n["category"] for n in report["packNodes"]} == {"FateZero"}
    assert sorted(report["libraryFateZero"]) == sorted(displays)
    assert Path(report["libraryShot"]).exists()


def test_missing_node_is_detected(server, tmp_path):
    """Negative control: the same checks report a node type the server does not have."""
    ui = wf.load(wf.ui_path("fatezero_style_edit"))
    victim = next(n for n in ui["nodes"] if n["type"] == "FateZeroLoadVideo")
    victim["type"] = "FateZeroNoSuchNode"
    broken = tmp_path / "broken_workflow.json"
    broken.write_text(json.dumps(ui))
    r = _run_frontend(server, [broken], tmp_path / "shots")["workflows"][0]
    assert r["missingTypes"] == ["FateZeroNoSuchNode"]
    assert any("FateZeroNoSuchNode" in d for d in r["dialogs"]), r["dialogs"]
    assert [n["id"] for n in r["nodes"] if n["hasErrors"]] == [victim["id"]]


def test_screenshot_for_the_readme(report):
    """The style workflow cropped to its graph: the box of its nodes and groups on the page, inside
    the 1920x1080 window, taking most of the window's width once the view is fitted."""
    r = _result(report, "fatezero_style_edit")
    box, graph = r["graphBox"], r["graphBox"]["graph"]
    assert graph["left"] >= 0 and graph["top"] >= 0 and graph["right"] <= 1920 and graph["bottom"] <= 1080, \
        f"after Fit View the whole graph should be on the page: {graph}"
    assert box["width"] > 1920 // 2, "Fit View should spread the graph over the window"
    from PIL import Image
    with Image.open(r["screenshot"]) as full:
        assert full.size == (1920, 1080)
    with Image.open(r["graphShot"]) as im:
        assert im.size == (box["width"], box["height"])
        if os.environ.get("FATEZERO_UPDATE_SCREENSHOT"):
            docs = PACK_DIR / "docs" / "screenshot.png"
            docs.parent.mkdir(exist_ok=True)
            im.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(docs, optimize=True)
            assert docs.stat().st_size < 300_000
