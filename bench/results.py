"""The run's record: its environment (versions, device, threads, commit), the machine, the
working tree's changes, and the result file ``bench/results/<prefix><timestamp>.json``."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path

from harness import PACK_DIR, RESULTS_DIR, Env


def environment(env: Env) -> dict:
    import torch
    try:
        rev = subprocess.run(["git", "-C", str(PACK_DIR), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(PACK_DIR), "status", "--porcelain"], capture_output=True,
                                    text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        rev, dirty = "", False
    try:
        import comfyui_version
        comfy_version = comfyui_version.__version__
    except ImportError:
        comfy_version = "?"
    from comfy.ldm.modules.attention import optimized_attention
    info = {"python": platform.python_version(), "torch": torch.__version__, "comfyui": comfy_version,
            "device": str(env.device), "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "attention": optimized_attention.__name__, "pack_git": rev + ("+dirty" if dirty else ""),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "model": env.model_desc, "unet_dtype": str(env.model.model.get_dtype())}
    if env.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(env.device)
    return info


def machine() -> dict:
    import psutil
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "machine": platform.machine(), "cpu": cpu or platform.processor(),
            "cpu_count": os.cpu_count(), "ram_bytes": psutil.virtual_memory().total, "hostname": platform.node()}


def working_tree() -> dict:
    """A hash of the working tree's changes to tracked files (when the commit is "+dirty")."""
    try:
        diff = subprocess.run(["git", "-C", str(PACK_DIR), "diff", "HEAD"], capture_output=True, timeout=30).stdout
        return {"diff_sha1": hashlib.sha1(diff).hexdigest(), "diff_bytes": len(diff)}
    except (OSError, subprocess.SubprocessError):
        return {}


def result_path(out: str | None, stamp: str, prefix: str = "") -> Path:
    """``--out``, else ``bench/results/<prefix><stamp>.json``."""
    return Path(out) if out else RESULTS_DIR / f"{prefix}{stamp}.json"


def write_results(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str))


def commit() -> str:
    """The pack's short commit ("" outside git)."""
    try:
        return subprocess.run(["git", "-C", str(PACK_DIR), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def report_table(title: str, table_text: str, out: str | None, prefix: str, record: dict) -> Path:
    """Print a small bench's title and table, and write ``record`` with its command and commit to
    ``--out`` or ``bench/results/<prefix><timestamp>.json``."""
    import sys
    import time
    print(f"\n{title}")
    print(table_text)
    path = result_path(out, time.strftime("%Y%m%d-%H%M%S"), prefix)
    write_results(path, {"command": " ".join(sys.argv), "commit": commit(), **record})
    print(f"JSON: {path}")
    return path
