from __future__ import annotations

import ctypes
import gc
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import host  # noqa: E402
import models_sd1  # noqa: E402
import models_sd2_sdxl  # noqa: E402
import models_wan  # noqa: E402
import workflow_files  # noqa: E402

host.import_comfy_in_process()

CACHE = Path(os.environ.get("FATEZERO_TEST_CACHE", host.PACK_DIR / ".host" / "cache"))


def release_memory() -> None:
    """Give the memory of dropped models back to the system: collect reference cycles (ComfyUI's
    patchers have some), then ``malloc_trim``, since glibc keeps freed heap pages otherwise (up
    to 2.4 GB after an SD2 checkpoint) and the next large model is loaded on top of them."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


@pytest.fixture(scope="module", autouse=True)
def _release_module_memory():
    """Once a test module's own fixtures are torn down (this one, set up first, is torn down
    last), their memory goes back to the system before the next module builds its models."""
    yield
    release_memory()


def _peak_rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), 0)


def pytest_terminal_summary(terminalreporter):
    """The pytest process's peak resident memory, the number a contributor's laptop must hold
    (the test server is another process, with its own models)."""
    peak = _peak_rss_kib()
    if peak:
        terminalreporter.write_line(f"pytest process peak RSS (VmHWM): {peak / 2**20:.2f} GiB ({peak // 1024} MiB)")


@pytest.fixture(scope="session")
def pack():
    """The pack as ComfyUI loaded it (``pack.fatezero_attn``, ``pack.NODE_CLASS_MAPPINGS``)."""
    module, _ = host.load_pack_in_process()
    return module


@pytest.fixture(scope="session")
def comfy_nodes(pack):
    """ComfyUI's ``nodes`` module with the pack's nodes registered."""
    import nodes
    return nodes


@pytest.fixture(scope="session")
def node(comfy_nodes):
    """A node instance by its class name, as the executor makes it: ``node("KSampler")``."""
    return lambda name: comfy_nodes.NODE_CLASS_MAPPINGS[name]()


@pytest.fixture(scope="session")
def checkpoint_dir() -> Path:
    """A models folder with the random SD1.5-detected checkpoint (and the inpainting one) in
    checkpoints/, the random ControlNet and LoRA that fit it in controlnet/ and loras/,
    built once and cached (the test server sees these folders)."""
    models_sd1.sd15_checkpoint(CACHE / "checkpoints")
    models_sd1.sd15_inpaint_checkpoint(CACHE / "checkpoints")
    models_sd1.sd15_controlnet(CACHE / "controlnet")
    models_sd1.sd15_lora(CACHE / "loras")
    release_memory()  # what building them (when not cached yet) left
    return CACHE


@pytest.fixture(scope="session")
def checkpoint_name(checkpoint_dir) -> str:
    return models_sd1.sd15_checkpoint(checkpoint_dir / "checkpoints").name


@pytest.fixture(scope="session")
def controlnet_name(checkpoint_dir) -> str:
    return models_sd1.sd15_controlnet(checkpoint_dir / "controlnet").name


@pytest.fixture(scope="session")
def tiny_model():
    return models_sd1.tiny_model_patcher(seed=0)


@pytest.fixture(scope="session")
def server(tmp_path_factory, checkpoint_dir):
    """A real ComfyUI server on 127.0.0.1 with the pack, stopped by its pid at the end."""
    srv = host.ComfyServer(tmp_path_factory.mktemp("comfy-server"), checkpoint_dir)
    srv.start()
    workflow_files.copy_sample_clips(srv.input_dir)  # the clips the shipped workflows name (bikes.mp4 too)
    try:
        yield srv
    finally:
        srv.stop()
        if os.environ.get("FATEZERO_KEEP_SERVER_LOG"):
            print(srv.log())


def pytest_sessionfinish(session, exitstatus):
    # A run in which no test passed proves nothing: fail it.
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    passed = len(reporter.stats.get("passed", [])) if reporter else 0
    if exitstatus == 0 and passed == 0:
        session.exitstatus = 1


@pytest.fixture(scope="session")
def graph_files(checkpoint_dir) -> dict[str, Path]:
    """The random ControlNet, LoRA and inpainting checkpoint in ComfyUI's folder layout,
    visible to the loader nodes as a models folder next to the test checkpoint is."""
    import folder_paths
    paths = {
        "controlnet": models_sd1.sd15_controlnet(checkpoint_dir / "controlnet"),
        "loras": models_sd1.sd15_lora(checkpoint_dir / "loras"),
        "checkpoints": models_sd1.sd15_inpaint_checkpoint(checkpoint_dir / "checkpoints"),
    }
    for folder, path in paths.items():
        folder_paths.add_model_folder_path(folder, str(path.parent))
    return paths


@pytest.fixture(scope="session")
def sd15(comfy_nodes, graph_files, checkpoint_name):
    """(MODEL, CLIP, VAE) of the test checkpoint through the real CheckpointLoaderSimple."""
    return comfy_nodes.NODE_CLASS_MAPPINGS["CheckpointLoaderSimple"]().load_checkpoint(checkpoint_name)


@pytest.fixture(scope="session")
def sd15_clip(checkpoint_dir, checkpoint_name):
    """The test SD1.5 checkpoint's CLIP alone (its UNet and VAE not loaded)."""
    import comfy.sd
    return comfy.sd.load_checkpoint_guess_config(str(checkpoint_dir / "checkpoints" / checkpoint_name),
                                                 output_vae=False, output_model=False)[1]


@pytest.fixture(scope="session")
def wan_files() -> dict[str, str]:
    """The tiny random Wan parts (``models_wan``) by role -> file name, written into the test
    models folder's diffusion_models/ and vae/ (the folders the test server reads too) and
    registered with folder_paths, for UNETLoader and VAELoader: ``"wan21"`` (detected as
    WAN21_T2V), ``"wan22_5b"`` (48 channels, WAN22_T2V), ``"wan22_i2v"`` (a Wan 2.2 I2V A14B
    expert: 36 input channels) and ``"vae"`` (the Wan 2.1 VAE); and ``"lora"`` in loras/, a random
    LoRA on the blocks' attention, which fits ``"wan21"`` and ``"wan22_i2v"`` alike (the same
    widths) and stands in for the lightx2v LoRAs.
    Rebuilt every session (bit-identical, well under a second). There is no text-encoder
    file: CLIPLoader cannot load a tiny umT5 (see ``models_wan``); use ``wan_clip``."""
    import folder_paths
    paths = {
        "wan21": ("diffusion_models", models_wan.wan21_diffusion_model(CACHE / "diffusion_models")),
        "wan22_5b": ("diffusion_models", models_wan.wan22_5b_diffusion_model(CACHE / "diffusion_models")),
        "wan22_i2v": ("diffusion_models", models_wan.wan_i2v_diffusion_model(CACHE / "diffusion_models", "2.2")),
        "vae": ("vae", models_wan.wan21_vae(CACHE / "vae")),
        "lora": ("loras", models_wan.wan21_lora(CACHE / "loras")),
    }
    for folder, path in paths.values():
        folder_paths.add_model_folder_path(folder, str(path.parent))
    return {role: path.name for role, (_, path) in paths.items()}


@pytest.fixture(scope="session")
def wan_spiece() -> bytes:
    """The test SentencePiece model (umT5's special ids; each word of the test prompts one piece)."""
    return models_wan.train_spiece()


@pytest.fixture(scope="session")
def wan_clip(wan_spiece):
    """A CLIP of ComfyUI's Wan text-encoder classes (umT5 path, WanT5Tokenizer) with a tiny
    random umT5: ``encode_from_tokens`` gives Wan's [1, 512, 4096] context."""
    return models_wan.wan_text_encoder(wan_spiece)


@pytest.fixture(scope="session")
def family_checkpoints(checkpoint_dir):
    """Family name -> checkpoint file name of the random SD2, SD2-v, SDXL (``models_sd2_sdxl``)
    and SD1 checkpoints, in the models folder the test server sees."""
    import folder_paths
    folder = checkpoint_dir / "checkpoints"
    files = {"SD2": models_sd2_sdxl.sd2_checkpoint(folder),
             "SD2-v": models_sd2_sdxl.sd2_checkpoint(folder, v_prediction=True),
             "SDXL": models_sd2_sdxl.sdxl_checkpoint(folder), "SD1": models_sd1.sd15_checkpoint(folder)}
    release_memory()  # what building them (when not cached yet) left
    folder_paths.add_model_folder_path("checkpoints", str(folder))
    return {name: path.name for name, path in files.items()}


class FamilyModels:
    """(MODEL, CLIP, VAE) of each family's checkpoint as ``CheckpointLoaderSimple`` loads it,
    shared by the test modules. SD1 is the session's ``sd15``. Of the large ones (SD2, SD2-v,
    SDXL: 2 to 3 GB loaded, and an SDXL load needs 5 GB while it runs) only the one asked for
    last is held: asking for another, or ``drop()``, releases it first, so that two never
    coexist. Tests must not keep one past their own end (a module fixture that caches a MODEL
    would keep it alive)."""

    LARGE = ("SD2", "SD2-v", "SDXL")

    def __init__(self, node, checkpoints: dict[str, str], sd15):
        self._node, self._checkpoints, self._sd15 = node, checkpoints, sd15
        self._name, self._held = None, None

    def __call__(self, name: str):
        if name not in self.LARGE:
            assert name == "SD1", name
            return self._sd15
        if name != self._name:
            self.drop()
            self._held = self._node("CheckpointLoaderSimple").load_checkpoint(self._checkpoints[name])
            self._name = name
        return self._held

    def drop(self) -> None:
        """Release the held large model (for a test that loads a checkpoint of its own)."""
        self._name = self._held = None
        release_memory()


@pytest.fixture(scope="session")
def family_models(node, family_checkpoints, sd15):
    """``family_models(name)`` -> (MODEL, CLIP, VAE) for "SD1", "SD2", "SD2-v" or "SDXL" (``FamilyModels``)."""
    models = FamilyModels(node, family_checkpoints, sd15)
    yield models
    models.drop()


@pytest.fixture
def no_family_model_held(family_models):
    """For a test that loads a large checkpoint itself: the shared one is released first, and
    what the test loaded is released after it."""
    family_models.drop()
    yield
    release_memory()
