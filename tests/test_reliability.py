"""Reliability in the real host (issue 6): a FateZero run leaves the MODEL and the server
as it found them, back-to-back and cached runs match runs alone, interrupts and allocation
failures end cleanly and the server goes on serving, memory stays bounded over many runs,
and a damaged store file is refused with a message that names the node and the input.

Everything runs in ComfyUI's own server process (``tests/host.py``), on the small random
SD1.5-shaped checkpoint; sizes are tiny (2 frames of 64x64, 2 DDIM steps; the interrupted
graphs 4 frames of 256x256) so the whole file takes a few minutes on two CPU cores. Results
are compared bit for bit with runs alone in a second, fresh server: on CPU the same graph
with the same inputs gives the same bytes, whatever ran before it, unless state leaked.

Nothing is mocked. What is simulated is said where it is: the out-of-memory case caps the
server's address space with prlimit so that a real allocation fails.
"""
from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import safetensors.torch
import torch

import host

SRC = "a silver jeep driving down a curvy road in the countryside"
TGT_A = "watercolor painting of a silver jeep driving down a curvy road in the countryside"
TGT_B = "a golden jeep driving down a curvy road in the countryside"
VIDEO = "reliability_bikes.mp4"  # this module's own copy, so touching it cannot disturb other tests
SIZE, FRAMES, STEPS = 64, 2, 2    # latent 8x8: the UNet's levels are 8, 4 and 2 (the blend level)
# The interrupted graphs are larger (4 frames of 256x256: latent 32x32, every level fused), so
# what an interrupted run holds (UNet activations, the partial store, the patched clone) is
# hundreds of MB, not noise; only their first step or two run.
BIG = {"size": 256, "frames": 4}
LONG_STEPS = 6                    # the saved store the sampling-phase interrupt edits with
INVERSION_INTERRUPT_STEPS = 40
CLIENT_ID = "fatezero-tests"      # the client id tests/host.py queues with
MB = 1024 ** 2

FATEZERO_NODES = {"7", "8", "9", "10", "11"}  # inversion, blend mask, fusion, sampler, save


# -- graphs (API format, as the frontend sends them) -------------------------------------
def fatezero_graph(ckpt: str, tgt: str = TGT_A, steps: int = STEPS, tau: float = 0.3, prefix: str = "rel",
                   save_store: bool = False, size: int = SIZE, frames: int = FRAMES) -> dict:
    """Load video -> VAEEncode -> inversion -> blend mask -> fusion -> KSamplerAdvanced -> SaveLatent."""
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "FateZeroLoadVideo", "inputs": {
            "video": VIDEO, "frame_count": frames, "start_frame": 0, "every_nth": 1,
            "width": size, "height": size, "resize": "center crop"}},
        "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": SRC, "clip": ["1", 1]}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": tgt, "clip": ["1", 1]}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "7": {"class_type": "FateZeroDDIMInversion", "inputs": {
            "model": ["1", 0], "source_conditioning": ["4", 0], "latent": ["3", 0], "steps": steps,
            "temporal_mode": "middle", "temporal_min_channels": 640, "video_groupnorm": True,
            "clean_sigma": "alphas_cumprod[0] (authors)"}},
        "8": {"class_type": "FateZeroBlendMask", "inputs": {
            "attention_store": ["7", 1], "clip": ["1", 1], "source_prompt": SRC, "blend_words": "jeep",
            "tau": tau, "latent_blend": False, "target_blend_words": ""}},
        "9": {"class_type": "FateZeroAttentionFusion", "inputs": {
            "model": ["1", 0], "attention_store": ["7", 1], "clip": ["1", 1], "source_prompt": SRC,
            "target_prompt": tgt, "cross_replace_steps": 0.8, "self_replace_steps": 0.8, "mapping": "auto",
            "reweight": "", "cross_replace_words": "", "blend_mask": ["8", 0]}},
        "10": {"class_type": "KSamplerAdvanced", "inputs": sampler_inputs(["9", 0], ["7", 0], steps)},
        "11": {"class_type": "SaveLatent", "inputs": {"samples": ["10", 0], "filename_prefix": prefix}},
    }
    if save_store:
        graph["12"] = {"class_type": "FateZeroSaveAttentionStore", "inputs": {
            "attention_store": ["7", 1], "filename_prefix": f"fatezero/{prefix}_store", "folder": "output"}}
        graph["13"] = {"class_type": "SaveLatent", "inputs": {"samples": ["7", 0], "filename_prefix": f"{prefix}_inverted"}}
    return graph


def sampler_inputs(model, latent, steps: int, add_noise: str = "disable", seed: int = 0) -> dict:
    return {"model": model, "positive": ["5", 0], "negative": ["6", 0], "latent_image": latent,
            "add_noise": add_noise, "noise_seed": seed, "steps": steps, "cfg": 7.5, "sampler_name": "ddim",
            "scheduler": "ddim_uniform", "start_at_step": 0, "end_at_step": 10000,
            "return_with_leftover_noise": "disable"}


def inversion_only_graph(ckpt: str, steps: int, prefix: str, **size) -> dict:
    """The inversion and what it needs, its store saved and its latent saved."""
    g = fatezero_graph(ckpt, steps=steps, prefix=prefix, save_store=True, **size)
    for node in ("8", "9", "10", "11"):
        del g[node]
    return g


def plain_graph(ckpt: str, seed: int = 11, prefix: str = "rel_plain") -> dict:
    """Plain text-to-image sampling with the checkpoint's MODEL (noise added from a fixed seed)."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red jeep in the snow", "clip": ["1", 1]}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "20": {"class_type": "EmptyLatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": FRAMES}},
        "21": {"class_type": "KSamplerAdvanced", "inputs": sampler_inputs(["1", 0], ["20", 0], STEPS, "enable", seed)},
        "22": {"class_type": "SaveLatent", "inputs": {"samples": ["21", 0], "filename_prefix": prefix}},
    }


def stored_edit_graph(ckpt: str, store_file: str, latent_file: str, steps: int, prefix: str) -> dict:
    """Edit from a saved store and a saved inverted latent: starts sampling at once."""
    g = fatezero_graph(ckpt, steps=steps, prefix=prefix, **BIG)
    for node in ("2", "3", "7"):
        del g[node]
    g["30"] = {"class_type": "FateZeroLoadAttentionStore", "inputs": {"store_file": store_file}}
    g["31"] = {"class_type": "LoadLatent", "inputs": {"latent": latent_file}}
    g["8"]["inputs"]["attention_store"] = ["30", 0]
    g["9"]["inputs"]["attention_store"] = ["30", 0]
    g["10"]["inputs"]["latent_image"] = ["31", 0]
    return g


def store_preview_graph(ckpt: str, store_file: str, prefix: str) -> dict:
    """A stored attention store -> blend mask -> its preview saved as an image (cheap: no UNet)."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "30": {"class_type": "FateZeroLoadAttentionStore", "inputs": {"store_file": store_file}},
        "8": {"class_type": "FateZeroBlendMask", "inputs": {
            "attention_store": ["30", 0], "clip": ["1", 1], "source_prompt": SRC, "blend_words": "jeep",
            "tau": 0.3, "latent_blend": False, "target_blend_words": ""}},
        "32": {"class_type": "MaskToImage", "inputs": {"mask": ["8", 1]}},
        "33": {"class_type": "SaveImage", "inputs": {"images": ["32", 0], "filename_prefix": prefix}},
    }


# -- reading results ---------------------------------------------------------------------
def saved_latent(srv, entry: dict, node: str) -> torch.Tensor:
    item = entry["outputs"][node]["latents"][0]
    return safetensors.torch.load_file(str(srv.output_dir / item["subfolder"] / item["filename"]))["latent_tensor"]


def cached(entry: dict) -> set:
    return set(next((m[1]["nodes"] for m in entry["status"]["messages"] if m[0] == "execution_cached"), []))


def rss(srv) -> int:
    return psutil.Process(srv.proc.pid).memory_info().rss


def assert_same(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    if not torch.equal(got, want):
        diff = (got.float() - want.float()).abs().max().item()
        raise AssertionError(f"{what}: not bit-identical (max abs difference {diff:g})")


def post_no_answer(srv, path: str, body: dict) -> None:
    """POST to an endpoint that answers 200 with an empty body (/interrupt, /free);
    ``srv.post`` expects JSON back."""
    req = urllib.request.Request(srv.url + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200, f"{path} answered {r.status}"


def free_caches(srv) -> None:
    """ComfyUI's own 'free memory' (unload models, drop every cached output). The worker
    applies the flags when /free wakes it from waiting for the queue; right after a prompt
    it may still be collecting garbage and miss that wake-up, so /free is sent again once
    it waits (the flags stay set until applied). The caller checks that the next prompt
    had nothing cached."""
    for _ in range(2):
        time.sleep(1)
        post_no_answer(srv, "/free", {"unload_models": True, "free_memory": True})
    time.sleep(1)


def touch(path: Path) -> None:
    """A new mtime: FateZero Load Video's IS_CHANGED (mtime+size) makes the graph run again."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))


class Messages:
    """ComfyUI's websocket messages for the tests' client id, collected in a thread
    (progress per node and step: what the frontend's progress bar shows)."""

    def __init__(self, srv):
        self.srv = srv
        self.items: list[dict] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=lambda: asyncio.run(self._listen()), daemon=True)

    async def _listen(self) -> None:
        import aiohttp
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{self.srv.url}/ws?clientId={CLIENT_ID}") as ws:
                self._ready.set()
                while not self._stop:
                    try:
                        msg = await ws.receive(timeout=0.5)
                    except asyncio.TimeoutError:
                        continue
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        with self._lock:
                            self.items.append(json.loads(msg.data))
                    elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        break

    def __enter__(self) -> "Messages":
        self._thread.start()
        assert self._ready.wait(30), "could not open ComfyUI's websocket"
        return self

    def __exit__(self, *exc) -> None:
        self._stop = True
        self._thread.join(10)

    def wait_progress(self, prompt_id: str, node: str, at_least: int = 1, timeout: float = 300.0) -> dict:
        """Wait until ``node`` of ``prompt_id`` reported step ``at_least`` (or more)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self._lock:
                for m in self.items:
                    d = m.get("data", {})
                    if m.get("type") == "progress" and d.get("prompt_id") == prompt_id and str(d.get("node")) == node \
                            and d.get("value", 0) >= at_least:
                        return d
            if self.srv.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI died:\n{self.srv.log()[-4000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"node {node} of {prompt_id} did not report step {at_least} in {timeout}s")

    def max_progress(self, prompt_id: str, node: str) -> int:
        with self._lock:
            return max((m["data"]["value"] for m in self.items if m.get("type") == "progress"
                        and m["data"].get("prompt_id") == prompt_id and str(m["data"].get("node")) == node), default=0)


# -- fixtures ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def srv(server):
    """The session's server with this module's own copy of the clip."""
    shutil.copy(host.test_clip("bikes.mp4"), server.input_dir / VIDEO)
    return server


@pytest.fixture(scope="module")
def reference(tmp_path_factory, checkpoint_dir, checkpoint_name):
    """Results of runs alone, in a second, fresh server (stopped before the tests go on).

    ``plain`` is the very first graph that server runs; before ``A`` and ``B`` it frees its
    models and drops every cached output, so each runs every node of its graph from scratch."""
    ref = host.ComfyServer(tmp_path_factory.mktemp("comfy-reference"), checkpoint_dir)
    out = {}
    try:
        ref.start()
        shutil.copy(host.test_clip("bikes.mp4"), ref.input_dir / VIDEO)
        out["plain"] = saved_latent(ref, ref.run(plain_graph(checkpoint_name)), "22")
        for name, tgt in (("A", TGT_A), ("B", TGT_B)):
            free_caches(ref)
            entry = ref.run(fatezero_graph(checkpoint_name, tgt=tgt, prefix=f"ref_{name}"))
            assert not cached(entry), f"reference run {name} was not alone: cached {cached(entry)}"
            out[name] = saved_latent(ref, entry, "11")
    finally:
        ref.stop()
    for name, latent in out.items():
        assert torch.isfinite(latent).all() and latent.std() > 0, f"reference {name} is degenerate"
    assert not torch.equal(out["A"], out["B"]), "the target prompt did not reach the sampler"
    return out


@pytest.fixture(scope="module")
def long_store(srv, checkpoint_name):
    """A saved store of LONG_STEPS steps and its inverted latent (copied to the input folder
    for LoadLatent): a graph that edits from them starts sampling at once."""
    entry = srv.run(inversion_only_graph(checkpoint_name, LONG_STEPS, "rel_long", **BIG))
    store_file = entry["outputs"]["12"]["text"][0]
    item = entry["outputs"]["13"]["latents"][0]
    latent_file = "rel_long_inverted.latent"
    shutil.copy(srv.output_dir / item["subfolder"] / item["filename"], srv.input_dir / latent_file)
    return store_file, latent_file


def run_next_graph_alone_equivalent(srv, ckpt, reference, prefix: str) -> dict:
    """Graph A after whatever came before: every FateZero node must run (not be served
    from the cache) and give exactly what A gives alone in a fresh server."""
    entry = srv.run(fatezero_graph(ckpt, prefix=prefix))
    assert not (cached(entry) & FATEZERO_NODES), f"the FateZero nodes were served from cache: {cached(entry)}"
    assert_same(saved_latent(srv, entry, "11"), reference["A"], f"graph A after {prefix}")
    return entry


# -- isolation ---------------------------------------------------------------------------
def test_plain_sampling_after_a_fused_run_matches_a_fresh_server(srv, checkpoint_name, reference):
    """The fused run patches clones of the checkpoint's MODEL (attention replacements, a UNet
    wrapper, video GroupNorm object patches); plain sampling with that same cached MODEL
    object afterwards must give the latents a fresh server gives, bit for bit."""
    fused = srv.run(fatezero_graph(checkpoint_name, prefix="rel_iso"))
    assert torch.isfinite(saved_latent(srv, fused, "11")).all()
    entry = srv.run(plain_graph(checkpoint_name))
    assert "1" in cached(entry), "the plain graph did not reuse the MODEL the fused run patched clones of"
    assert "21" not in cached(entry)
    assert_same(saved_latent(srv, entry, "22"), reference["plain"], "plain sampling after a fused run")


# -- back to back, and ComfyUI's cache ---------------------------------------------------
def test_back_to_back_graphs_match_runs_alone(srv, checkpoint_name, reference):
    """Two edits (different target prompts) queued together: the second starts as the first
    ends, and shares the first's cached inversion store object."""
    ids = [srv.queue(fatezero_graph(checkpoint_name, tgt=tgt, prefix=f"rel_b2b_{n}"))
           for n, tgt in (("A", TGT_A), ("B", TGT_B))]
    entries = [srv.wait(i) for i in ids]
    for entry in entries:
        assert entry["status"]["status_str"] == "success", entry["status"]["messages"]
    # B shares A's video, encode and inversion (ComfyUI's cache), not its edit
    assert {"2", "3", "7"} <= cached(entries[1]) and not ({"9", "10"} & cached(entries[1]))
    assert_same(saved_latent(srv, entries[0], "11"), reference["A"], "A queued before B")
    assert_same(saved_latent(srv, entries[1], "11"), reference["B"], "B queued right after A (cached inversion)")


def test_same_graph_twice_cached_and_forced_match_run_alone(srv, checkpoint_name, reference):
    """The same graph again is served from ComfyUI's cache; after a seed-free change (the
    clip's mtime) every node runs again and must still give the same bytes."""
    graph = fatezero_graph(checkpoint_name, prefix="rel_twice")
    first = srv.run(graph)
    second = srv.run(graph)
    assert FATEZERO_NODES <= cached(second), "an unchanged graph should be served from ComfyUI's cache"
    assert_same(saved_latent(srv, second, "11"), reference["A"], "the same graph again (cached)")
    touch(srv.input_dir / VIDEO)  # seed-free change: only the clip's mtime
    forced = srv.run(graph)
    assert not (cached(forced) & ({"2", "3"} | FATEZERO_NODES)), f"not re-executed: {cached(forced)}"
    assert_same(saved_latent(srv, first, "11"), reference["A"], "the same graph, first run")
    assert_same(saved_latent(srv, forced, "11"), reference["A"], "the same graph re-executed")


# -- interrupts --------------------------------------------------------------------------
class PeakRss:
    """The server's peak RSS while the block runs (sampled every 20 ms)."""

    def __init__(self, srv):
        self.proc = psutil.Process(srv.proc.pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


def interrupt_and_check(srv, prompt_id: str, node: str, messages: Messages, steps: int) -> float:
    """POST /interrupt once ``node`` reported its first step; the prompt must end within 30 s
    as interrupted (not as an error) before the node finished."""
    messages.wait_progress(prompt_id, node, 1)
    t0 = time.time()
    post_no_answer(srv, "/interrupt", {"prompt_id": prompt_id})
    entry = srv.wait(prompt_id, timeout=30)
    took = time.time() - t0
    status = entry["status"]
    assert status["status_str"] == "error", status
    stopped = [m[1] for m in status["messages"] if m[0] == "execution_interrupted"]
    assert stopped and stopped[0]["node_id"] == node, status["messages"]
    assert not [m for m in status["messages"] if m[0] == "execution_error"], status["messages"]
    assert messages.max_progress(prompt_id, node) < steps, "the node ran to the end: nothing was interrupted"
    return took


def check_interrupt_memory(label: str, before: int, peak: int, after1: int, after2: int, record_property) -> None:
    """What an interrupted run held must not stay: a second interrupted run of the same graph
    may not add to what the first left (the allocator keeps its high-water mark, so RSS does
    not drop back to ``before`` exactly; kept stores, clones or activations would add up)."""
    mb = {k: round(v / MB) for k, v in dict(before=before, peak=peak, after_first=after1, after_second=after2).items()}
    record_property(f"rss_MB_{label}", mb)
    print(f"\n[interrupt in {label}] RSS (MB): {mb}")
    assert peak - before > 50 * MB, "the interrupted run held too little memory to show anything"
    assert after2 - after1 < 64 * MB, f"a second interrupted run kept {(after2 - after1) / MB:.0f} MB more: {mb}"
    assert after1 - before < peak - before, f"nothing was released after the interrupt: {mb}"


def test_interrupt_during_inversion_then_next_graph_runs(srv, checkpoint_name, reference, record_property):
    """/interrupt during a 40-step inversion: the prompt ends as interrupted, the graph queued
    behind it runs as if alone, and a second interrupted run keeps no more memory."""
    long_graph = fatezero_graph(checkpoint_name, steps=INVERSION_INTERRUPT_STEPS, prefix="rel_int_inv", **BIG)
    before = rss(srv)
    with Messages(srv) as messages, PeakRss(srv) as peak:
        long_id = srv.queue(long_graph)
        next_id = srv.queue(fatezero_graph(checkpoint_name, prefix="rel_after_inv_interrupt"))
        took = interrupt_and_check(srv, long_id, "7", messages, INVERSION_INTERRUPT_STEPS)
        after1 = rss(srv)
        entry = srv.wait(next_id)
        assert entry["status"]["status_str"] == "success", entry["status"]["messages"]
        assert not (cached(entry) & FATEZERO_NODES)
        assert_same(saved_latent(srv, entry, "11"), reference["A"], "graph A queued behind the interrupted inversion")
        # the same long graph again (graph A evicted its cached nodes: it all runs again), interrupted again
        again = srv.queue(long_graph)
        interrupt_and_check(srv, again, "7", messages, INVERSION_INTERRUPT_STEPS)
        after2 = rss(srv)
    print(f"\n[interrupt in inversion] the prompt ended {took:.1f} s after /interrupt")
    assert took < 30
    check_interrupt_memory("inversion", before, peak.peak, after1, after2, record_property)


def test_interrupt_during_fused_sampling_then_next_graph_runs(srv, checkpoint_name, reference, long_store,
                                                              record_property):
    """/interrupt during fused sampling (from a saved store and inverted latent, so sampling
    starts at once): the base MODEL still samples as in a fresh server, the next FateZero
    graph runs as if alone, and a second interrupted run keeps no more memory."""
    store_file, latent_file = long_store
    edit = stored_edit_graph(checkpoint_name, store_file, latent_file, LONG_STEPS, "rel_int_fuse")
    before = rss(srv)
    with Messages(srv) as messages, PeakRss(srv) as peak:
        took = interrupt_and_check(srv, srv.queue(edit), "10", messages, LONG_STEPS)
        after1 = rss(srv)
        # the base MODEL the interrupted clone was patched from still samples as in a fresh server
        plain = srv.run(plain_graph(checkpoint_name, prefix="rel_plain_after_interrupt"))
        assert "21" not in cached(plain)
        assert_same(saved_latent(srv, plain, "22"), reference["plain"], "plain sampling after an interrupted fused run")
        run_next_graph_alone_equivalent(srv, checkpoint_name, reference, "rel_after_fuse_interrupt")
        interrupt_and_check(srv, srv.queue(edit), "10", messages, LONG_STEPS)
        after2 = rss(srv)
    print(f"\n[interrupt in fused sampling] the prompt ended {took:.1f} s after /interrupt")
    assert took < 30
    check_interrupt_memory("fused sampling", before, peak.peak, after1, after2, record_property)


# -- out of memory -----------------------------------------------------------------------
def inversion_of_empty_latent(ckpt: str, size: int, steps: int, prefix: str) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": SRC, "clip": ["1", 1]}},
        "20": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": FRAMES}},
        "7": {"class_type": "FateZeroDDIMInversion", "inputs": {
            "model": ["1", 0], "source_conditioning": ["4", 0], "latent": ["20", 0], "steps": steps,
            "temporal_mode": "middle", "temporal_min_channels": 640, "video_groupnorm": True,
            "clean_sigma": "alphas_cumprod[0] (authors)"}},
        "11": {"class_type": "SaveLatent", "inputs": {"samples": ["7", 0], "filename_prefix": prefix}},
    }


def test_video_too_large_for_ram_is_refused_before_allocating(srv, checkpoint_name):
    """The pack's own check: 250 frames at 16384x16384 would need terabytes; FateZero Load
    Video refuses before allocating (a clean refusal, not an out-of-memory crash)."""
    graph = {"2": fatezero_graph(checkpoint_name)["2"],
             "40": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}
    graph["2"]["inputs"].update(frame_count=0, width=16384, height=16384)
    before = rss(srv)
    err = srv.error_of(graph)
    assert err["node_type"] == "FateZeroLoadVideo"
    msg = err["exception_message"]
    assert msg.startswith("FateZero Load Video:") and "'frame_count'" in msg and "GB of RAM" in msg, msg
    assert rss(srv) - before < 50 * MB, "the refused request allocated memory anyway"


def test_allocation_failure_inside_the_inversion_then_server_serves(srv, checkpoint_name, reference, record_property):
    """A real allocation failure inside FateZero DDIM Inversion's sampling loop, no mocks.

    What is simulated: running out of memory. The server's address space is capped with
    prlimit(RLIMIT_AS) at its current size + 16 MB, so the kernel refuses the first large
    allocation; torch's CPU allocator raises its own error ("DefaultCPUAllocator: can't
    allocate memory", what a real CPU out-of-memory raises; torch.OutOfMemoryError is the
    CUDA allocator's and cannot be produced on this CPU host). The graph inverts a 512x512
    latent, whose first UNet activations are ~10 MB each, so it fails inside the inversion's
    UNet call, after the pack's patch was installed on the MODEL clone. The cap is lifted
    in ``finally``; then the server must serve plain and FateZero graphs exactly as before.
    """
    # same nodes at a small size first, so only the big activations are new allocations
    srv.run(inversion_of_empty_latent(checkpoint_name, SIZE, 1, "rel_oom_warm"))
    proc = psutil.Process(srv.proc.pid)
    before = proc.memory_info().rss
    old = resource.prlimit(srv.proc.pid, resource.RLIMIT_AS)
    resource.prlimit(srv.proc.pid, resource.RLIMIT_AS, (proc.memory_info().vms + 16 * MB, old[1]))
    try:
        err = srv.error_of(inversion_of_empty_latent(checkpoint_name, 512, 1, "rel_oom"), timeout=300)
    finally:
        resource.prlimit(srv.proc.pid, resource.RLIMIT_AS, old)
    assert resource.prlimit(srv.proc.pid, resource.RLIMIT_AS) == old
    assert err["node_type"] == "FateZeroDDIMInversion", err["exception_message"]
    assert "can't allocate memory" in err["exception_message"], err["exception_message"]
    assert "FateZero DDIM Inversion: out of memory" in err["exception_message"], err["exception_message"]
    trace = "".join(err["traceback"])
    assert "ComfyUI-FateZero" in trace, "the failure was not reported by the pack's inversion node"
    after = proc.memory_info().rss

    plain = srv.run(plain_graph(checkpoint_name, prefix="rel_plain_after_oom"))
    assert "21" not in cached(plain)
    assert_same(saved_latent(srv, plain, "22"), reference["plain"], "plain sampling after the allocation failure")
    run_next_graph_alone_equivalent(srv, checkpoint_name, reference, "rel_after_oom")
    record_property("rss_MB", dict(before=before / MB, after_failure=after / MB))
    print(f"\n[allocation failure] RSS before {before / MB:.0f} MB, after {after / MB:.0f} MB")
    assert after - before < 100 * MB


# -- soak --------------------------------------------------------------------------------
SOAK_RUNS, SOAK_WARMUP, SOAK_GROWTH = 20, 5, 64 * MB
SOAK_STEPS = 1  # one fused DDIM step a run: the soak is about what stays behind, not the edit
STYLES = ["watercolor", "oil", "pastel", "charcoal", "ink", "pencil", "gouache", "acrylic", "crayon", "chalk",
          "fresco", "mosaic", "pixel", "neon", "vintage", "golden", "silver", "wooden", "paper", "glass"]


def test_soak_twenty_edits_memory_bounded(srv, checkpoint_name, record_property):
    """The same edit queued 20 times, each with its own target style and tau (so the blend
    mask, the fusion and the sampler run every time; the inversion is ComfyUI's cached one
    after the first run).
    After SOAK_WARMUP runs the server's RSS may grow by less than SOAK_GROWTH (64 MB, about
    4 MB a run) in total. At these sizes a leaked store is a few KB, so this catches leaked
    model copies, activations or per-run buffers, not a leaked small store."""
    sizes, results = [], []
    for i, style in enumerate(STYLES[:SOAK_RUNS]):
        tgt = f"{style} painting of a silver jeep driving down a curvy road in the countryside"
        entry = srv.run(fatezero_graph(checkpoint_name, tgt=tgt, tau=round(0.2 + 0.01 * i, 2), steps=SOAK_STEPS,
                                       prefix="rel_soak"))
        assert not (cached(entry) & {"8", "9", "10", "11"}), f"run {i} was served from cache"
        results.append(saved_latent(srv, entry, "11"))
        sizes.append(rss(srv))
    mb = [round(s / MB) for s in sizes]
    growth = sizes[-1] - sizes[SOAK_WARMUP - 1]
    peak_growth = max(sizes[SOAK_WARMUP:]) - sizes[SOAK_WARMUP - 1]
    record_property("soak_rss_MB", mb)
    print(f"\n[soak] RSS per run (MB): {mb}; growth over the last {SOAK_RUNS - SOAK_WARMUP} runs "
          f"{growth / MB:+.0f} MB (peak {peak_growth / MB:+.0f} MB)")
    assert all(torch.isfinite(r).all() for r in results)
    assert len({r.numpy().tobytes() for r in results}) == SOAK_RUNS, "some target prompts gave identical edits"
    assert peak_growth < SOAK_GROWTH, f"RSS grew by {peak_growth / MB:.0f} MB over {SOAK_RUNS - SOAK_WARMUP} runs: {mb}"


# -- a damaged store file ----------------------------------------------------------------
def test_truncated_store_file_is_refused_naming_node_and_input(srv, checkpoint_name, long_store):
    """A store file that loaded fine, then cut in half (or emptied): FateZero Load Attention
    Store runs again (its IS_CHANGED sees the new size) and fails with a message naming the
    node, the input and the file; the server then goes on serving."""
    store_file, _ = long_store
    root, _, rel = store_file.partition("/")
    assert root == "output"
    original = srv.output_dir / rel
    for cut in ("half", "empty"):
        name = f"output/fatezero/rel_damaged_{cut}.safetensors"
        copy = srv.output_dir / "fatezero" / f"rel_damaged_{cut}.safetensors"
        shutil.copy(original, copy)
        ok = srv.run(store_preview_graph(checkpoint_name, name, f"rel_store_ok_{cut}"))
        assert ok["outputs"]["33"]["images"], "the intact copy did not load"
        data = original.read_bytes()
        copy.write_bytes(data[: len(data) // 2] if cut == "half" else b"")
        err = srv.error_of(store_preview_graph(checkpoint_name, name, f"rel_store_bad_{cut}"))
        msg = err["exception_message"]
        assert err["node_type"] == "FateZeroLoadAttentionStore", msg
        assert msg.startswith("FateZero Load Attention Store: 'store_file'") and name in msg, msg
        assert "cannot be used" in msg or "not a readable" in msg, msg
        assert "Traceback" not in msg
    # and the server goes on: the original store still loads
    srv.run(store_preview_graph(checkpoint_name, store_file, "rel_store_after"))
