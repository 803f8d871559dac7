"""The two file formats of one ``Workflow``: UI (what the frontend saves and loads) and API
(what ``POST /prompt`` takes)."""
from __future__ import annotations

import json
import uuid

from .graph import Workflow
from .node_types import TYPES, UI_ONLY_TYPES, is_widget


def to_api(wf: Workflow) -> dict:
    """The API-format graph: {node id: {inputs, class_type, _meta}}, without the UI-only nodes."""
    api = {}
    for node in sorted(wf.nodes, key=lambda n: n.id):
        if node.type in UI_ONLY_TYPES:
            continue
        spec = TYPES[node.type]
        inputs = {}
        for name, type_, optional in spec.inputs:
            if name in node.links:
                src, slot = node.links[name]
                inputs[name] = [str(src), slot]
            elif is_widget(type_):
                inputs[name] = node.values[name]
            elif not optional:
                raise ValueError(f"{wf.name}: node {node.id} ({node.type}) has no link for '{name}'")
        unknown = (set(node.values) | set(node.links)) - {i[0] for i in spec.inputs}
        if unknown:
            raise ValueError(f"{wf.name}: node {node.id} ({node.type}) has no inputs {sorted(unknown)}")
        api[str(node.id)] = {"inputs": inputs, "class_type": node.type,
                             "_meta": {"title": node.title or spec.display}}
    return api


def to_ui(wf: Workflow) -> dict:
    """The UI-format graph: nodes with positions, sockets and widget values, links, groups."""
    links = []       # [id, origin id, origin slot, target id, target slot, type]
    by_id = {n.id: n for n in wf.nodes}
    out_links: dict = {}
    link_id = 0
    ui_nodes = []
    order = _execution_order(wf)
    for node in sorted(wf.nodes, key=lambda n: n.id):
        entry = {"id": node.id, "type": node.type, "pos": list(node.pos), "size": list(node.size),
                 "flags": {}, "order": order[node.id], "mode": 0}
        if node.type == "Note":
            entry.update({"inputs": [], "outputs": [], "title": node.title, "properties": {},
                          "widgets_values": [node.values["text"]]})
        else:
            spec = TYPES[node.type]
            sockets = [i for i in spec.inputs if not is_widget(i[1])]
            widgets = [i for i in spec.inputs if is_widget(i[1])]
            inputs = []
            for name, type_, optional in sockets + widgets:
                slot = {"localized_name": name, "name": name}
                if optional:
                    slot["shape"] = 7
                slot["type"] = type_
                if is_widget(type_):
                    slot["widget"] = {"name": name}
                link = None
                if name in node.links:
                    link_id += 1
                    link = link_id
                    src, src_slot = node.links[name]
                    src_type = TYPES[by_id[src].type].outputs[src_slot][1]
                    links.append([link, src, src_slot, node.id, len(inputs), src_type])
                    out_links.setdefault((src, src_slot), []).append(link)
                slot["link"] = link
                inputs.append(slot)
            if spec.upload:
                inputs.append({"localized_name": "upload", "name": "upload", "type": "IMAGEUPLOAD",
                               "widget": {"name": "upload"}, "link": None})
            values = []
            for name, type_, _ in widgets:
                values.append(node.values[name] if name in node.values else "")
                if name in spec.seed_control:
                    values.append("fixed")
            if spec.upload:
                values.append("image")
            entry["inputs"] = inputs
            entry["outputs"] = [{"localized_name": name, "name": name, "type": type_, "links": None}
                                for name, type_ in spec.outputs]
            if node.title:
                entry["title"] = node.title
            entry["properties"] = {"Node name for S&R": node.type}
            if node.models:  # what the frontend's missing-model dialog offers to download
                entry["properties"]["models"] = [dict(m) for m in node.models]
            if widgets:
                entry["widgets_values"] = values
        if node.color:
            entry["color"], entry["bgcolor"] = node.color
        ui_nodes.append(entry)
    for entry in ui_nodes:
        for slot, out in enumerate(entry["outputs"]):
            out["links"] = out_links.get((entry["id"], slot))
    groups = [{"id": i + 1, "title": g.title, "bounding": list(g.bounding), "color": g.color, "font_size": 24,
               "flags": {}} for i, g in enumerate(wf.groups)]
    return {
        "id": _uuid(wf.name), "revision": 0,
        "last_node_id": max(n.id for n in wf.nodes), "last_link_id": link_id,
        "nodes": ui_nodes, "links": links, "groups": groups, "config": {},
        "extra": {"ds": {"scale": 0.6, "offset": [520, 40]}, "frontendVersion": "1.32.9"},
        "version": 0.4,
    }


def _execution_order(wf: Workflow) -> dict:
    """A topological order (the frontend recomputes it; stored for a stable file)."""
    done: dict = {}
    nodes = sorted(wf.nodes, key=lambda n: n.id)
    while len(done) < len(nodes):
        for node in nodes:
            if node.id not in done and all(src in done for src, _ in node.links.values()):
                done[node.id] = len(done)
                break
        else:
            raise ValueError(f"{wf.name}: the graph has a cycle")
    return done


def _uuid(name: str) -> str:
    """The same id on every build, so the file does not change when nothing else does."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfyui-fatezero/workflows/{name}"))


def dumps(data: dict) -> str:
    """A workflow file's text, as written and as ``--check`` compares it."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"

