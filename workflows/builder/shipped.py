"""The shipped workflow files: which workflows, where their files go, and the one place that
shrinks a written workflow for the tests and the demo job."""
from __future__ import annotations

import copy
import json
from pathlib import Path

from .formats import dumps, to_api, to_ui
from .model_files import offer_downloads
from .sd import SD_WORKFLOWS
from .wan import WAN_WORKFLOWS
from .wan_i2v import WAN_I2V_WORKFLOWS

# ComfyUI serves each custom node's example_workflows/*.json at /api/workflow_templates/<folder>/
# and its template browser lists them under the pack's folder name (older folder names such as
# workflows/ still work but log a hint to rename them). The API files sit in workflows/api/, which
# ComfyUI does not scan, so the browser does not offer them as graphs.
WORKFLOW_DIR = Path(__file__).resolve().parents[1]        # workflows/: build.py, builder/, api/
TEMPLATE_DIR = WORKFLOW_DIR.parent / "example_workflows"  # the UI files ComfyUI offers as templates
API_DIR = WORKFLOW_DIR / "api"
WORKFLOWS = SD_WORKFLOWS + WAN_WORKFLOWS + WAN_I2V_WORKFLOWS


def files() -> dict[Path, str]:
    """Every file the build writes, path -> text: a workflow's UI file and its API twin."""
    out = {}
    for make in WORKFLOWS:
        wf = make()
        offer_downloads(wf.nodes)  # every loader's file with its download, for the missing-model dialog
        out[TEMPLATE_DIR / f"{wf.name}.json"] = dumps(to_ui(wf))
        out[API_DIR / f"{wf.name}_api.json"] = dumps(to_api(wf))
    return out


# -- one place to shrink a workflow (tests, demo job) -------------------------------------
def resize(api: dict, *, ckpt_name: str | None = None, control_net_name: str | None = None,
           width: int | None = None, height: int | None = None, frames: int | None = None,
           steps: int | None = None, video: str | None = None, prefix: str | None = None,
           window: int | None = None, unet_name: str | None = None, vae_name: str | None = None,
           lora_name: str | None = None) -> dict:
    """A copy of an API-format workflow with its size, steps, model files or output prefix changed.

    ``steps`` is set in the inversion only: the sampler (SamplerCustom) takes its steps from the
    inversion's edit_sigmas output;
    ``prefix`` replaces the ``fatezero/`` part of every save node's filename_prefix."""
    api = copy.deepcopy(api)
    for node in api.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "CheckpointLoaderSimple" and ckpt_name is not None:
            inputs["ckpt_name"] = ckpt_name
        elif kind == "ControlNetLoader" and control_net_name is not None:
            inputs["control_net_name"] = control_net_name
        elif kind == "UNETLoader" and unet_name is not None:  # Wan: both experts of A14B get this file
            inputs["unet_name"] = unet_name
        elif kind == "VAELoader" and vae_name is not None:
            inputs["vae_name"] = vae_name
        elif kind == "LoraLoaderModelOnly" and lora_name is not None:  # both experts' LoRAs get this file
            inputs["lora_name"] = lora_name
        elif kind == "FateZeroLoadVideo":
            for key, value in (("width", width), ("height", height), ("frame_count", frames), ("video", video)):
                if value is not None:
                    inputs[key] = value
        elif kind == "FateZeroDDIMInversion":
            for key, value in (("steps", steps), ("window", window)):
                if value is not None:
                    inputs[key] = value
        elif kind in ("SaveVideo", "SaveImage") and prefix is not None:
            inputs["filename_prefix"] = prefix + inputs["filename_prefix"].split("/", 1)[-1]
    return api


def load_api(name: str) -> dict:
    """The written API-format workflow ``name`` (without ``_api.json``)."""
    return json.loads((API_DIR / f"{name}_api.json").read_text())

