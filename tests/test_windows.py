"""Long clips in windows: independent sub-videos around a shared anchor frame (issue 11).

On the test checkpoint through the real loader, nodes and samplers, with 16 frames of the
real bikes clip:
- the sub-videos: every frame in exactly one window, the anchor where the mode reads it;
- with per-frame GroupNorm and the per-frame, middle and current+middle modes, a windowed
  inversion and edit (with a blend mask and latent blending) equal the all-frames run;
- with video-wide GroupNorm they stay close (the README's figures come from the bench);
- cache and recompute stores, saved and loaded, edit the same windows;
- a clip edited as two queue jobs of one window each (Window Frames / Window Output) gives
  the windowed job's latents, in process and through the real server;
- the sampler's progress counts windows x steps, /interrupt stops a windowed edit and the
  server runs the next graph.
"""
from __future__ import annotations

import shutil

import pytest
import torch

import host
from test_reliability import Messages, fatezero_graph, post_no_answer, saved_latent

SRC = "a silver jeep driving down a curvy road"
TGT = "a red jeep driving down a curvy road"
FRAMES, SIZE, STEPS = 16, 64, 3
AUTHORS = "alphas_cumprod[0] (authors)"
TAU = 0.5
# A data-picked tau keeps this far from every value: float rounding between runs is ~1e-7.
TAU_MARGIN = 1e-4
VIDEO = "windows_bikes.mp4"


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# -- the sub-videos ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["per-frame", "middle", "current+middle", "first+previous"])
@pytest.mark.parametrize("frames,window", [(16, 8), (16, 4), (17, 5), (6, 3), (5, 8)])
def test_every_frame_is_in_one_window_with_the_anchor_where_the_mode_reads_it(pack, mode, frames, window):
    windows, temporal = pack.fatezero_attn.video.windows, pack.fatezero_attn.edit.temporal
    subs = windows.sub_videos(frames, window, mode)
    anchor = windows.anchor_frame(mode, frames)
    own = [s.frames[r] for s in subs for r in s.own_rows]
    assert sorted(own) == list(range(frames)), "every clip frame is output by exactly one window"
    for s in subs:
        assert len(s.own_rows) <= (window if window < frames else frames)
        if anchor is None:
            assert s.anchor_row is None and list(s.frames) == sorted(s.frames)
            continue
        # the mode reads the anchor in the sub-video exactly as it reads it in the clip
        assert s.frames[s.anchor_row] == anchor
        assert all(s.anchor_row in src for src in temporal.source_frames(mode, len(s.frames))), \
            "every frame of the sub-video reads the anchor"
        assert s.borrowed_anchor == (len(s.own_rows) < len(s.frames))
    rows = windows.clip_rows(subs)
    laid = [f for s in subs for f in s.frames]
    assert [laid[r] for r in rows] == list(range(frames)), "clip_rows maps every frame to its own output row"
    if window == 0 or window >= frames:
        assert len(subs) == 1 and list(subs[0].frames) == list(range(frames))


# -- edits in process ------------------------------------------------------------------------
def load_clip(pack, vae, size: int):
    images, _ = pack.fatezero_attn.video.video_io.load_clip(host.test_clip("bikes.mp4"), FRAMES, 0, 1, size, size,
                                                      "center crop")
    return images, {"samples": vae.encode(images[..., :3])}


@pytest.fixture(scope="module")
def clip_latent(pack, sd15):
    return load_clip(pack, sd15[2], SIZE)


@pytest.fixture(scope="module")
def blend_clip_latent(pack, sd15):
    """128x128: the blend layers' maps are 4x4, enough for a mask that covers part of a frame."""
    return load_clip(pack, sd15[2], 2 * SIZE)


class Editor:
    def __init__(self, node, sd15):
        self.node, (self.model, self.clip, self.vae) = node, sd15
        encode = lambda text: node("CLIPTextEncode").encode(self.clip, text)[0]
        self.source, self.target, self.negative = encode(SRC), encode(TGT), encode("")

    def invert(self, latent, mode="middle", gn=True, window=0, store_mode="recompute"):
        return self.node("FateZeroDDIMInversion").invert(self.model, self.source, latent, STEPS, mode, 0, gn, AUTHORS,
                                                         store_mode, 0.8, window)[:3]

    def edit(self, inverted, store, sigmas, blend=False, tau=TAU):
        mask = None
        if blend:
            mask = self.node("FateZeroBlendMask").make(store, self.clip, SRC, "silver, jeep", tau, True, "red, jeep")
        model = self.node("FateZeroAttentionFusion").patch(self.model, store, self.clip, SRC, TGT, 0.8, 0.8, "auto",
                                                           "", "", None if mask is None else mask[0])[0]
        (sampler,) = self.node("KSamplerSelect").get_sampler("ddim")
        out = self.node("SamplerCustom").sample(model, False, 0, 7.5, self.target, self.negative, sampler, sigmas,
                                                inverted)
        return out[0]["samples"], out[1]["samples"], None if mask is None else mask[1]

    def run(self, latent, blend=False, tau=TAU, **inversion):
        inverted, store, sigmas = self.invert(latent, **inversion)
        return (inverted["samples"], store, *self.edit(inverted, store, sigmas, blend, tau))

    def partial_tau(self, store) -> float:
        """A threshold that puts about half of the blend mask's pixels in (random weights attend
        almost evenly, so the authors' 0.3 would take every pixel), placed in a gap between the
        values the mask compares with it, never at one of them: runs whose maps differ by float
        rounding (windows vs all frames, one CPU vs another) must take the same pixels."""
        pooled = self.node("FateZeroBlendMask").make(store, self.clip, SRC, "silver, jeep", TAU)[0].pooled
        # what threshold_mask compares with tau: each frame's map over its peak (a nearest resize repeats values)
        return tau_in_gap(pooled / pooled.amax(dim=(-2, -1), keepdim=True))


def tau_in_gap(values: torch.Tensor, margin: float = TAU_MARGIN) -> float:
    """Midway between the two neighbouring values with the widest gap in the middle half of
    ``values``; asserts every value is at least ``margin`` from it."""
    v = values.flatten().double().unique()  # sorted
    lo, hi = len(v) // 4, 3 * len(v) // 4
    gaps = v[lo + 1:hi + 1] - v[lo:hi]
    i = lo + int(gaps.argmax())
    tau = float((v[i] + v[i + 1]) / 2)
    distance = float((v - tau).abs().min())
    assert distance >= margin, f"no gap of {2 * margin} between the blend maps' values near their median"
    return tau


@pytest.fixture(scope="module")
def editor(node, sd15):
    return Editor(node, sd15)


@pytest.mark.parametrize("mode,window,blend", [("middle", 4, True), ("middle", 8, False),
                                               ("current+middle", 4, False), ("per-frame", 4, True)])
def test_windows_equal_all_frames_with_per_frame_groupnorm(editor, clip_latent, blend_clip_latent, mode, window,
                                                           blend):
    """Each frame reads only itself and the anchor, whose own computation reads only itself:
    the windows repeat the all-frames run, blend mask included (tau in a gap of the maps'
    values). At 3 steps the latent blend has no step after the first (its window is [0])."""
    images, latent = blend_clip_latent if blend else clip_latent
    inverted, store0, sigmas = editor.invert(latent, mode=mode, gn=False)
    tau = editor.partial_tau(store0) if blend else TAU  # without a blend mask tau is not read
    inv0, out0, denoised0, mask0 = inverted["samples"], *editor.edit(inverted, store0, sigmas, blend, tau)
    inv1, store1, out1, denoised1, mask1 = editor.run(latent, blend, tau, mode=mode, gn=False, window=window)
    assert store1.info.window == window and store1.rows == FRAMES + (0 if mode == "per-frame" else FRAMES // window - 1)
    torch.testing.assert_close(inv1, inv0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out1, out0, rtol=1e-5, atol=1e-4)
    # SamplerCustom's denoised output is the whole clip too, assembled from the windows
    torch.testing.assert_close(denoised1, denoised0, rtol=1e-5, atol=1e-4)
    if blend:
        assert mask1.shape == mask0.shape == (FRAMES, *images.shape[1:3])
        torch.testing.assert_close(mask1, mask0)
        assert 0 < float(mask0.mean()) < 1, "the blend mask should cover part of the frames"
    assert rel(out0, inv0) > 0.05, "the edit changed nothing: the comparison would prove nothing"


def test_video_groupnorm_windows_stay_close_to_all_frames(editor, clip_latent):
    """Video-wide GroupNorm takes statistics over the sub-video: not exact, but close
    (the README reports the bench's figures for windows of 8 and 4)."""
    _, latent = clip_latent
    _, _, out0, _, _ = editor.run(latent)
    diffs = [rel(editor.run(latent, window=w)[2], out0) for w in (8, 4)]
    print(f"\n[video GroupNorm] edit vs all frames: window 8 {diffs[0]:.2%}, window 4 {diffs[1]:.2%}")
    assert 0 < diffs[0] < 0.1 and 0 < diffs[1] < 0.1


def test_cache_and_saved_stores_edit_the_same_windows(editor, clip_latent, pack, tmp_path):
    _, latent = clip_latent
    inverted, store, sigmas = editor.invert(latent, window=6, store_mode="recompute")
    want = editor.edit(inverted, store, sigmas, blend=True)[0]
    inverted_c, cached, _ = editor.invert(latent, window=6, store_mode="cache")
    assert len(cached.window_caches) == 3 and cached.nbytes() > store.nbytes()
    torch.testing.assert_close(editor.edit(inverted_c, cached, sigmas, blend=True)[0], want, rtol=1e-5, atol=1e-5)
    store_file = pack.fatezero_attn.store.store_file
    for s, name in ((cached, "cached"), (store, "recompute")):
        store_file.save_store(s, tmp_path / f"{name}.safetensors")
        loaded = store_file.load_store(tmp_path / f"{name}.safetensors")
        assert loaded.info == s.info and loaded.rows == s.rows
        torch.testing.assert_close(editor.edit(inverted, loaded, sigmas, blend=True)[0], want, rtol=1e-5, atol=1e-5)
    # a windowed file without its anchors' latents is refused
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open
    with safe_open(str(tmp_path / "recompute.safetensors"), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(tmp_path / "recompute.safetensors"))
    del tensors["anchor_latents"]
    save_file(tensors, str(tmp_path / "broken.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="anchor latents"):
        store_file.load_store(tmp_path / "broken.safetensors")


def window_jobs(editor, node, images, window, mode="middle"):
    """The clip as one queue job per window: cut, invert with window 0, edit, keep own frames."""
    first = node("FateZeroWindowFrames").cut(images, window, 0, mode)
    outputs = []
    for k in range(first[2]):
        sub_images, win, _ = node("FateZeroWindowFrames").cut(images, window, k, mode)
        inverted, store, sigmas = editor.invert({"samples": editor.vae.encode(sub_images[..., :3])}, mode=mode)
        out = editor.edit(inverted, store, sigmas, blend=True)[0]
        kept, _, first_frame = node("FateZeroWindowOutput").keep(win, {"samples": out})
        outputs.append((first_frame, kept["samples"]))
    return torch.cat([t for _, t in sorted(outputs, key=lambda o: o[0])])


@pytest.mark.parametrize("mode", ["middle", "first+previous"])
def test_two_jobs_of_one_window_equal_one_windowed_job(editor, node, clip_latent, mode):
    """Video-wide GroupNorm (the default) and all: each job is the windowed job's sub-video."""
    images, _ = clip_latent
    latent = {"samples": editor.vae.encode(images[..., :3])}
    windowed = editor.run(latent, True, mode=mode, window=8)[2]
    jobs = window_jobs(editor, node, images, 8, mode)
    assert jobs.shape == windowed.shape == (FRAMES, 4, SIZE // 8, SIZE // 8)
    torch.testing.assert_close(jobs, windowed, rtol=1e-5, atol=1e-4)


class UNetCalls:
    """Counts UNet calls (a model wrapper under the pack's, as another node's would be)."""

    def __init__(self):
        self.calls = 0

    def __deepcopy__(self, memo):
        return self

    def __call__(self, apply_model, args):
        self.calls += 1
        return apply_model(args["input"], args["timestep"], **args["c"])


def test_controlnet_on_inversion_and_sampler_is_cut_per_window(node, editor, clip_latent, graph_files):
    """A ControlNet with one hint per frame on the inversion's and the sampler's conditioning:
    each window gets its frames' hints (windowed = all frames, per-frame GroupNorm), the
    source row replays the window's control, and positive and negative rows stay one UNet
    call per step (they share the window's copy of the control)."""
    images, latent = clip_latent
    (cnet,) = node("ControlNetLoader").load_controlnet(graph_files["controlnet"].name)
    apply = node("ControlNetApplyAdvanced").apply_controlnet
    source, _ = apply(editor.source, editor.source, cnet, images, 1.0, 0.0, 1.0)
    positive, negative = apply(editor.target, editor.negative, cnet, images, 1.0, 0.0, 1.0)
    counter = UNetCalls()
    model = editor.model.clone()
    model.set_model_unet_function_wrapper(counter)
    results = []
    for window in (0, 8):
        inverted, store, sigmas, *_ = node("FateZeroDDIMInversion").invert(model, source, latent, STEPS, "middle", 0, False,
                                                                       AUTHORS, "recompute", 0.8, window)
        fused = node("FateZeroAttentionFusion").patch(model, store, editor.clip, SRC, TGT, 0.8, 0.8, "auto", "", "")[0]
        (sampler,) = node("KSamplerSelect").get_sampler("ddim")
        counter.calls = 0
        results.append(node("SamplerCustom").sample(fused, False, 0, 7.5, positive, negative, sampler, sigmas,
                                                    inverted)[0]["samples"])
        results.append(counter.calls)
    out0, calls0, out8, calls8 = results
    torch.testing.assert_close(out8, out0, rtol=1e-5, atol=1e-4)
    assert calls8 == 2 * calls0, f"{calls0} UNet calls for the clip, {calls8} for two windows"


def test_blend_mask_of_another_store_is_refused(editor, clip_latent):
    _, latent = clip_latent
    inverted, windowed, sigmas = editor.invert(latent, window=8)
    _, whole, _ = editor.invert(latent)
    mask = editor.node("FateZeroBlendMask").make(whole, editor.clip, SRC, "jeep", 0.3)[0]
    with pytest.raises(ValueError, match="'blend_mask' was made from another attention store"):
        editor.node("FateZeroAttentionFusion").patch(editor.model, windowed, editor.clip, SRC, TGT, 0.8, 0.8, "auto",
                                                     "", "", mask)


def test_spatio_temporal_windows_before_the_inversion_give_way_to_the_inversions(node, editor, clip_latent):
    _, latent = clip_latent
    (model,) = node("FateZeroSpatioTemporalAttention").patch(editor.model, "middle", 0, False, 4)
    got, store, _, *_ = node("FateZeroDDIMInversion").invert(model, editor.source, latent, STEPS, "middle", 0, False,
                                                         AUTHORS, "recompute", 0.8, 0)
    want = editor.invert(latent, gn=False)[0]
    assert store.info.window == 0 and store.rows == FRAMES
    torch.testing.assert_close(got["samples"], want["samples"], rtol=0, atol=0)


def test_window_nodes_refuse_what_does_not_fit(node, clip_latent, editor):
    images, latent = clip_latent
    with pytest.raises(ValueError, match=r"FateZero Window Frames: 'window_index' is 2.*use 0 to 1"):
        node("FateZeroWindowFrames").cut(images, 8, 2, "middle")
    _, win, _ = node("FateZeroWindowFrames").cut(images, 8, 1, "middle")
    with pytest.raises(ValueError, match=r"FateZero Window Output: 'images' has 16 frames, window 1 has 9"):
        node("FateZeroWindowOutput").keep(win, images=images)
    with pytest.raises(ValueError, match="connect 'latent'"):
        node("FateZeroWindowOutput").keep(win)
    # a windowed store edits the clip it was inverted from, not a part of it
    inverted, store, sigmas = editor.invert(latent, window=8)
    short = {"samples": inverted["samples"][:12]}
    with pytest.raises(ValueError, match="the sampler's latent has 12 frames and the windows cover 16"):
        editor.edit(short, store, sigmas)


def test_spatio_temporal_node_samples_in_windows(node, editor, clip_latent):
    """Plain video sampling in windows, per-frame GroupNorm, middle mode: the all-frames result."""
    _, latent = clip_latent
    outs = []
    for window in (0, 4):
        (model,) = node("FateZeroSpatioTemporalAttention").patch(editor.model, "middle", 0, False, window)
        outs.append(node("KSamplerAdvanced").sample(model, "enable", 5, STEPS, 7.5, "ddim", "ddim_uniform",
                                                    editor.target, editor.negative, latent, 0, 10000,
                                                    "disable")[0]["samples"])
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-4)


# -- on the server ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def srv(server):
    shutil.copy(host.test_clip("bikes.mp4"), server.input_dir / VIDEO)
    return server


def windowed_graph(ckpt: str, prefix: str, window: int, steps: int = STEPS) -> dict:
    graph = fatezero_graph(ckpt, tgt=TGT, steps=steps, prefix=prefix, size=SIZE, frames=FRAMES)
    graph["2"]["inputs"]["video"] = VIDEO
    graph["7"]["inputs"]["window"] = window
    return graph


def job_graph(ckpt: str, prefix: str, window: int, index: int) -> dict:
    graph = windowed_graph(ckpt, prefix, 0)
    graph["30"] = {"class_type": "FateZeroWindowFrames", "inputs": {
        "images": ["2", 0], "window": window, "window_index": index, "temporal_mode": "middle"}}
    graph["3"]["inputs"]["pixels"] = ["30", 0]
    graph["31"] = {"class_type": "FateZeroWindowOutput", "inputs": {"window": ["30", 1], "latent": ["10", 0]}}
    graph["11"]["inputs"]["samples"] = ["31", 0]
    return graph


def test_jobs_on_the_server_equal_the_windowed_job_and_progress_counts_windows(srv, checkpoint_name):
    with Messages(srv) as messages:
        windowed_id = srv.queue(windowed_graph(checkpoint_name, "win_all", 8))
        entry = srv.wait(windowed_id)
        assert entry["status"]["status_str"] == "success", entry["status"]["messages"]
        assert messages.max_progress(windowed_id, "10") == 2 * STEPS, "the sampler's bar counts 2 windows x steps"
    windowed = saved_latent(srv, entry, "11")
    jobs = [saved_latent(srv, srv.run(job_graph(checkpoint_name, f"win_job{k}", 8, k)), "11") for k in (0, 1)]
    torch.testing.assert_close(torch.cat(jobs), windowed, rtol=1e-5, atol=1e-4)


def test_interrupt_between_windows_leaves_the_server_working(srv, checkpoint_name):
    steps = 8
    with Messages(srv) as messages:
        long_id = srv.queue(windowed_graph(checkpoint_name, "win_interrupted", 4, steps))
        next_id = srv.queue(windowed_graph(checkpoint_name, "win_after_interrupt", 8))
        messages.wait_progress(long_id, "10", steps + 1)  # in the second window
        post_no_answer(srv, "/interrupt", {"prompt_id": long_id})
        entry = srv.wait(long_id, timeout=60)
        status = entry["status"]
        assert [m for m in status["messages"] if m[0] == "execution_interrupted"], status["messages"]
        assert messages.max_progress(long_id, "10") < 4 * steps, "the edit ran to the end"
        after = srv.wait(next_id)
        assert after["status"]["status_str"] == "success", after["status"]["messages"]
