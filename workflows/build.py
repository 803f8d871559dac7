"""The pack's example workflows, described once and written in both of ComfyUI's formats.

    python workflows/build.py          write example_workflows/<name>.json (UI) and workflows/api/<name>_api.json
    python workflows/build.py --check  exit 1 if a file on disk differs from this description

UI format is what the frontend saves and loads (nodes with positions, links, groups, a
Note); they go to the pack's ``example_workflows/``, the folder ComfyUI serves as the pack's
templates (Browse Templates lists them under the pack's folder name). API format is what
``POST /prompt`` takes; those files sit in ``workflows/api/``, a folder ComfyUI does not
scan, so the template browser does not offer them as graphs.

Both files of a workflow come from the same ``Node`` list (``builder/``, by part), so they
cannot drift; ``tests/test_workflows.py`` checks them against the server's ``/object_info``
anyway. ``resize()`` is the one place that shrinks a workflow for tests and the demo job.
Plain Python, no ComfyUI import: run it with any python3.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

PACKAGE = "fatezero_workflow_builder"
PACK_DIR = Path(__file__).resolve().parents[1]


def _load_builder() -> None:
    """Import ``builder/`` by path as ``PACKAGE``: this file runs as a script or is loaded by path
    (tests/workflow_files.py), so it has no package of its own, and ``builder`` is a PyPI name."""
    if PACKAGE in sys.modules:
        return
    folder = Path(__file__).resolve().parent / "builder"
    spec = importlib.util.spec_from_file_location(PACKAGE, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package  # before it runs, so its modules' relative imports find it
    spec.loader.exec_module(package)


_load_builder()
# What the tests and the demo job (scripts/main_job.py) read from this module.
from fatezero_workflow_builder.clips import BICYCLE, CLIPS, RABBIT  # noqa: E402
from fatezero_workflow_builder.model_files import UMT5, WAN21_T2V_1_3B, WAN21_VAE  # noqa: E402
from fatezero_workflow_builder.shipped import (API_DIR, TEMPLATE_DIR, WORKFLOW_DIR, WORKFLOWS, files,  # noqa: E402
                                               load_api, resize)

__all__ = ["API_DIR", "BICYCLE", "CLIPS", "RABBIT", "TEMPLATE_DIR", "UMT5", "WAN21_T2V_1_3B", "WAN21_VAE",
           "WORKFLOWS", "WORKFLOW_DIR", "files", "load_api", "main", "resize"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the files on disk, write nothing")
    args = ap.parse_args(argv)
    wanted = files()
    if args.check:
        stale = [str(p.relative_to(PACK_DIR)) for p, text in wanted.items()
                 if not p.exists() or p.read_text() != text]
        if stale:
            print("out of date (run python workflows/build.py):", ", ".join(stale))
            return 1
        print(f"{len(wanted)} workflow files up to date")
        return 0
    for folder in (TEMPLATE_DIR, API_DIR):
        folder.mkdir(exist_ok=True)
    for path, text in wanted.items():
        path.write_text(text)
        print("wrote", path.relative_to(PACK_DIR))
    return 0


if __name__ == "__main__":
    sys.exit(main())
