"""A workflow as data: its nodes, their links, the groups and the canvas layout.

One ``Workflow`` yields both files (``formats.to_ui``, ``formats.to_api``), so the two
cannot drift.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Node:
    id: int
    type: str
    pos: tuple
    size: tuple
    values: dict = field(default_factory=dict)   # widget name -> value (linked widgets keep theirs too)
    links: dict = field(default_factory=dict)    # input name -> (source node id, output slot)
    title: str | None = None
    color: tuple | None = None                   # (color, bgcolor)
    models: tuple = ()                           # UI properties.models: {name, url, directory} of its files


@dataclass
class Group:
    title: str
    bounding: tuple
    color: str


@dataclass
class Workflow:
    name: str
    description: str
    nodes: list[Node]
    groups: list[Group]


PROMPT_COLOR = ("#232", "#353")
SOURCE_COLOR = ("#223", "#335")
NOTE_COLOR = ("#432", "#653")
GROUP_COLORS = {"input": "#3f789e", "prompts": "#8A8", "control": "#3f8f8f", "invert": "#b06634",
                "blend": "#a1309b", "edit": "#88A", "save": "#b58b2a"}

# Columns of the layout (canvas units): left to right in the order the graph runs.
X0, X1, X2, X3, X4 = 0, 420, 880, 1340, 1780
NOTE_X = -460
