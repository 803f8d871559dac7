"""FateZero Load Video against real clips, real PyAV and a real ComfyUI (no mocks)."""
from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

import host

NODE = "FateZero Load Video"
COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]
# From comfyui-workflow-templates-media-video (requirements-test.txt): 75 frames of 350x350
# shown 33 or 34 ms each (2.5 s in all: 30 fps), RGBA with opaque alpha.
WEBP = "ltxv_text_to_video-1.webp"
STILL_WEBP = "video_wan_ati-2.webp"  # a still 400x400 preview from the same package


@pytest.fixture
def input_dir(tmp_path):
    """ComfyUI's input folder pointed at a fresh folder holding bikes.mp4, restored after."""
    import folder_paths
    old = folder_paths.get_input_directory()
    folder = tmp_path / "input"
    folder.mkdir()
    shutil.copy(host.test_clip("bikes.mp4"), folder / "bikes.mp4")
    folder_paths.set_input_directory(str(folder))
    try:
        yield folder
    finally:
        folder_paths.set_input_directory(old)


@pytest.fixture
def webp_dir(input_dir):
    shutil.copy(host.template_clip(WEBP), input_dir / WEBP)
    return input_dir


@pytest.fixture
def node(comfy_nodes):
    return comfy_nodes.NODE_CLASS_MAPPINGS["FateZeroLoadVideo"]


def load(node, video="bikes.mp4", **kw):
    args = dict(frame_count=8, start_frame=0, every_nth=1, width=512, height=512, resize="center crop")
    args.update(kw)
    return getattr(node(), node.FUNCTION)(video, **args)


def pyav_frames(path: Path, n: int) -> np.ndarray:
    """The first n frames decoded directly by PyAV, RGB uint8."""
    with av.open(str(path)) as c:
        out = []
        for f in c.decode(video=0):
            out.append(f.to_ndarray(format="rgb24"))
            if len(out) == n:
                break
    return np.stack(out)


def pillow_frames(path: Path) -> np.ndarray:
    """Every frame as Pillow composites it, RGB uint8."""
    with Image.open(path) as img:
        return np.stack([np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(img)])


def area_resize(frames: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, *size, 3] with an area filter: a reference for resizing
    that uses another filter than the loader's, so compare with a loose tolerance."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    return torch.nn.functional.interpolate(x, size, mode="area").permute(0, 2, 3, 1)


def as_uint8(images: torch.Tensor) -> np.ndarray:
    return (images * 255).round().to(torch.uint8).numpy()


def load_error(node, video="bikes.mp4", **kw) -> str:
    with pytest.raises(ValueError) as err:
        load(node, video, **kw)
    msg = str(err.value)
    assert msg.startswith(f"{NODE}: "), msg
    assert "Fix:" in msg, msg
    return msg


# -- registration ----------------------------------------------------------------------------
def test_registered_with_tooltips(pack, node, input_dir):
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["FateZeroLoadVideo"] == NODE
    assert node.CATEGORY == "FateZero" and node.DESCRIPTION
    assert node.RETURN_TYPES == ("IMAGE", "FLOAT", "INT")
    assert len(node.RETURN_NAMES) == len(node.OUTPUT_TOOLTIPS) == 3
    inputs = node.INPUT_TYPES()["required"]
    assert list(inputs) == ["video", "frame_count", "start_frame", "every_nth", "width", "height", "resize"]
    for name, spec in inputs.items():
        assert spec[1].get("tooltip"), f"{name} has no tooltip"
    assert inputs["video"][0] == ["bikes.mp4"] and inputs["video"][1]["video_upload"] is True
    assert inputs["frame_count"][1]["default"] == 8 and inputs["width"][1]["step"] == 8


def test_combo_lists_videos_and_image_folders(node, input_dir):
    (input_dir / "frames").mkdir()
    Image.new("RGB", (64, 64)).save(input_dir / "frames" / "0.png")
    (input_dir / "empty").mkdir()
    (input_dir / "notes.txt").write_text("x")
    (input_dir / "b.webm").write_bytes(b"")
    assert node.INPUT_TYPES()["required"]["video"][0] == ["b.webm", "bikes.mp4", "frames"]


# -- decoding --------------------------------------------------------------------------------
def test_default_batch(node, input_dir):
    images, fps, count = load(node)
    assert images.shape == (8, 512, 512, 3) and images.dtype == torch.float32
    assert 0.0 <= images.min() and images.max() <= 1.0 and images.std() > 0.05
    assert fps == 25.0 and count == 8


def test_selection_matches_pyav(node, input_dir):
    ref = pyav_frames(input_dir / "bikes.mp4", 20)
    # Native size: no resampling, so frames must be bit-identical to PyAV's own decode.
    images, fps, count = load(node, frame_count=4, start_frame=5, every_nth=3, width=640, height=272)
    assert count == 4 and fps == pytest.approx(25 / 3)
    assert np.array_equal(as_uint8(images), ref[[5, 8, 11, 14]])
    images, _, _ = load(node, frame_count=3, start_frame=2, width=640, height=272, resize="stretch")
    assert np.array_equal(as_uint8(images), ref[2:5])


def test_center_crop_keeps_the_middle(node, input_dir):
    ref = pyav_frames(input_dir / "bikes.mp4", 2)
    # 640x200 from 640x272: scale 1, so the crop is exactly rows 36..235.
    images, _, _ = load(node, frame_count=2, width=640, height=200)
    assert np.array_equal(as_uint8(images), ref[:, 36:236])


def test_non_square_sizes(node, input_dir):
    crop, _, _ = load(node, frame_count=3, width=320, height=192)
    stretch, _, _ = load(node, frame_count=3, width=320, height=192, resize="stretch")
    assert crop.shape == stretch.shape == (3, 192, 320, 3)
    assert not torch.allclose(crop, stretch)
    ref = pyav_frames(input_dir / "bikes.mp4", 1)
    # Crop: scale max(320/640, 192/272) -> 452x192, then 66 px off each side.
    assert (crop[0] - area_resize(ref, (192, 452))[0, :, 66:386]).abs().mean() < 0.03
    assert (stretch[0] - area_resize(ref, (192, 320))[0]).abs().mean() < 0.03


def test_all_frames_and_short_clip_warning(node, input_dir, caplog):
    images, fps, count = load(node, frame_count=0, every_nth=10, width=64, height=64)
    assert count == 25 and images.shape[0] == 25 and fps == 2.5
    with caplog.at_level(logging.WARNING):
        images, _, count = load(node, frame_count=8, start_frame=245, width=64, height=64)
    assert count == 5 and images.shape == (5, 64, 64, 3)
    assert "only 250 frames" in caplog.text and "5 of the 8 requested" in caplog.text


def test_a_frame_count_a_wan_vae_cuts_is_logged(node, input_dir, caplog):
    """Wan's VAE Encode keeps 4n+1 frames; 10 become 9 (3 latent frames), and the log says so."""
    with caplog.at_level(logging.INFO, logger="FateZero"):
        load(node, frame_count=10, width=64, height=64)
    assert "10 frames loaded" in caplog.text and "keeps the first 9 (3 latent frames) and drops the last 1" in caplog.text
    assert "set frame_count to 9 or 13" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="FateZero"):
        load(node, frame_count=9, width=64, height=64)
        load(node, frame_count=1, width=64, height=64)
    assert "A Wan VAE" not in caplog.text


def test_image_folder(node, input_dir):
    folder = input_dir / "frames"
    folder.mkdir()
    for i, color in enumerate(COLORS):  # unpadded numbers: natural order, not 0,1,10,...
        Image.new("RGB", (96, 80), color).save(folder / f"frame{i * 5}.png")
    Image.new("RGB", (96, 80), (9, 9, 9)).save(folder / "frame30.jpg")
    (folder / "readme.txt").write_text("ignored")
    images, fps, count = load(node, "frames", frame_count=0, every_nth=2, start_frame=1, width=64, height=64)
    assert count == 3 and images.shape == (3, 64, 64, 3) and fps == 8.0 / 2
    want = torch.tensor([COLORS[1], COLORS[3], COLORS[5]], dtype=torch.float32) / 255
    assert torch.allclose(images[:, 32, 32], want, atol=1 / 255)


def test_gif(node, input_dir):
    frames = [Image.new("RGB", (96, 64), c) for c in COLORS]
    frames[0].save(input_dir / "colors.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    images, fps, count = load(node, "colors.gif", frame_count=0, width=96, height=64)
    assert count == 6 and fps == 10.0 and images.shape == (6, 64, 96, 3)
    assert torch.allclose(images[:, 10, 10], torch.tensor(COLORS, dtype=torch.float32) / 255, atol=2 / 255)


def test_gif_that_pyav_rejects_is_read_with_pillow(node, input_dir):
    frames = [Image.new("RGB", (96, 64), c) for c in COLORS]
    frames[0].save(input_dir / "colors.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    data = bytearray((input_dir / "colors.gif").read_bytes())
    data[6:8] = b"\0\0"  # logical screen width 0: FFmpeg refuses it, Pillow (like browsers) plays it
    (input_dir / "zero_screen.gif").write_bytes(data)
    with pytest.raises(av.error.InvalidDataError):
        pyav_frames(input_dir / "zero_screen.gif", 1)
    images, fps, count = load(node, "zero_screen.gif", frame_count=0, start_frame=1, width=96, height=64)
    assert count == 5 and fps == 10.0 and images.shape == (5, 64, 96, 3)
    assert torch.allclose(images[:, 10, 10], torch.tensor(COLORS[1:], dtype=torch.float32) / 255, atol=2 / 255)


# -- animated WebP (PyAV cannot decode it: read with Pillow) ----------------------------------
def test_animated_webp_defeats_pyav_and_core_load_video(comfy_nodes, webp_dir):
    # Why the pack decodes WebP with Pillow: ComfyUI's PyAV, and so core LoadVideo +
    # GetVideoComponents, fail on it (core LoadVideo does not even list it).
    with pytest.raises(av.error.InvalidDataError):
        pyav_frames(webp_dir / WEBP, 1)
    core_load = comfy_nodes.NODE_CLASS_MAPPINGS["LoadVideo"]
    core_split = comfy_nodes.NODE_CLASS_MAPPINGS["GetVideoComponents"]
    with pytest.raises(av.error.InvalidDataError):
        core_split.execute(core_load.execute(WEBP).args[0])


def test_animated_webp_frames_rate_and_selection(node, webp_dir):
    images, fps, count = load(node, WEBP, frame_count=0, width=64, height=64)
    assert count == 75 and images.shape == (75, 64, 64, 3) and fps == 30.0  # 75 frames in 2500 ms
    assert images.std() > 0.05
    ref = area_resize(pillow_frames(webp_dir / WEBP), (176, 176))
    images, fps, count = load(node, WEBP, frame_count=4, start_frame=10, every_nth=7, width=176, height=176)
    assert count == 4 and fps == pytest.approx(30 / 7)
    # Each loaded frame is nearest to the source frame it should be (neighbours differ by motion).
    distance = (images[:, None] - ref[None]).abs().mean(dim=(2, 3, 4))  # [4 loaded, 75 source]
    assert distance.argmin(dim=1).tolist() == [10, 17, 24, 31]
    assert distance.min(dim=1).values.max() < 0.02
    msg = load_error(node, WEBP, start_frame=75)
    assert "'start_frame'" in msg and "which has 75 frames" in msg and "below 75" in msg


def test_animated_webp_resize(node, webp_dir):
    ref = pillow_frames(webp_dir / WEBP)[40:41]
    crop, _, _ = load(node, WEBP, frame_count=1, start_frame=40, width=320, height=192)
    stretch, _, _ = load(node, WEBP, frame_count=1, start_frame=40, width=320, height=192, resize="stretch")
    assert crop.shape == stretch.shape == (1, 192, 320, 3)
    # Crop: scale max(320/350, 192/350) -> 320x320, then rows 64..255.
    assert (crop[0] - area_resize(ref, (320, 320))[0, 64:256]).abs().mean() < 0.03
    assert (stretch[0] - area_resize(ref, (192, 320))[0]).abs().mean() < 0.03


def test_webp_listing_and_still_webp(node, webp_dir):
    shutil.copy(host.template_clip(STILL_WEBP), webp_dir / STILL_WEBP)
    assert Image.open(webp_dir / STILL_WEBP).n_frames == 1
    # Listed: animated WebP only (a still one is an image for Load Image) ...
    assert node.INPUT_TYPES()["required"]["video"][0] == ["bikes.mp4", WEBP]
    assert node.VALIDATE_INPUTS(video=STILL_WEBP) is True
    # ... but a still WebP given anyway is a 1-frame clip with the image-folder rate.
    images, fps, count = load(node, STILL_WEBP, frame_count=0, width=64, height=64)
    assert count == 1 and images.shape == (1, 64, 64, 3) and fps == 8.0


def test_animated_webp_bad_files(node, webp_dir):
    msg = load_error(node, WEBP, frame_count=0, width=16384, height=16384)
    assert "'frame_count'" in msg and "GB of RAM" in msg and "75 frames" in msg
    data = (webp_dir / WEBP).read_bytes()
    (webp_dir / "cut.webp").write_bytes(data[: len(data) // 2])
    (webp_dir / "noise.webp").write_bytes(np.random.default_rng(0).bytes(20000))
    for name in ("cut.webp", "noise.webp"):
        msg = load_error(node, name)
        assert f"'video': '{name}' cannot be decoded" in msg and "(Pillow: " in msg and "image folder" in msg
        assert "ffmpeg" not in msg  # ffmpeg cannot read animated WebP: no use advising it


def test_same_image_convention_as_core_load_video(comfy_nodes, node, input_dir):
    core_load = comfy_nodes.NODE_CLASS_MAPPINGS["LoadVideo"]
    core_split = comfy_nodes.NODE_CLASS_MAPPINGS["GetVideoComponents"]
    video = core_load.execute("bikes.mp4").args[0]
    core_images, _, core_fps = core_split.execute(video).args
    ours, fps, _ = load(node, frame_count=2, width=640, height=272)
    assert core_images.dtype == ours.dtype == torch.float32
    assert core_images.shape[1:] == ours.shape[1:] and core_images.shape[0] == 250
    assert fps == core_fps == 25.0
    assert torch.equal(core_images[:2], ours)


# -- change detection ------------------------------------------------------------------------
def test_is_changed_and_validate(node, input_dir):
    clip = input_dir / "bikes.mp4"
    before = node.IS_CHANGED(video="bikes.mp4", frame_count=8)
    assert node.IS_CHANGED(video="bikes.mp4") == before
    os.utime(clip, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert node.IS_CHANGED(video="bikes.mp4") != before
    assert node.VALIDATE_INPUTS(video="bikes.mp4") is True
    msg = node.VALIDATE_INPUTS(video="gone.mp4")
    assert isinstance(msg, str) and NODE in msg and "'video'" in msg and "not found" in msg


# -- bad inputs ------------------------------------------------------------------------------
def test_missing_and_escaping_paths(node, input_dir, tmp_path):
    assert "'video'" in load_error(node, "gone.mp4") and "not found" in load_error(node, "gone.mp4")
    outside = tmp_path / "outside.mp4"
    shutil.copy(input_dir / "bikes.mp4", outside)
    msg = load_error(node, "../outside.mp4")
    assert "'video'" in msg and "outside" in msg
    msg = load_error(node, str(outside))
    assert "'video'" in msg and "absolute" in msg
    (input_dir / "link.mp4").symlink_to(outside)  # a symlink out of the folder is an escape too
    assert "points outside" in load_error(node, "link.mp4")
    assert "points outside" in node.VALIDATE_INPUTS(video="../outside.mp4")


def test_corrupt_and_truncated_files(node, input_dir):
    (input_dir / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(20000))
    (input_dir / "cut.mp4").write_bytes((input_dir / "bikes.mp4").read_bytes()[:3000])
    for name in ("noise.mp4", "cut.mp4"):
        msg = load_error(node, name)
        assert "'video'" in msg and "corrupt, truncated or not a video" in msg and "re-encode" in msg
    (input_dir / "notes.txt").write_text("hello")
    assert "not a supported video type" in load_error(node, "notes.txt")
    (input_dir / "frames").mkdir()
    (input_dir / "frames" / "0.png").write_bytes(b"not a png")
    msg = load_error(node, "frames")
    assert "'video'" in msg and "0.png" in msg
    (input_dir / "empty").mkdir()
    assert "holds no" in load_error(node, "empty")


def test_bad_numbers(node, input_dir):
    msg = load_error(node, start_frame=1000)
    assert "'start_frame'" in msg and "past the end" in msg and "below 250" in msg
    msg = load_error(node, width=100)
    assert "'width'" in msg and "96 or 104" in msg
    msg = load_error(node, height=300)
    assert "'height'" in msg and "296 or 304" in msg
    assert "'every_nth'" in load_error(node, every_nth=0)
    assert "'resize'" in load_error(node, resize="pad")


def test_refuses_batches_larger_than_ram(node, input_dir):
    msg = load_error(node, frame_count=0, width=16384, height=16384)
    assert "'frame_count'" in msg and "GB of RAM" in msg and "250 frames" in msg


# -- a real ComfyUI server -------------------------------------------------------------------
def _graph(video="bikes.mp4", **kw) -> dict:
    inputs = dict(video=video, frame_count=6, start_frame=10, every_nth=2, width=320, height=192,
                  resize="center crop")
    inputs.update(kw)
    return {
        "1": {"class_type": "FateZeroLoadVideo", "inputs": inputs},
        "2": {"class_type": "SaveAnimatedWEBP", "inputs": {
            "images": ["1", 0], "fps": ["1", 1], "filename_prefix": "fatezero_video",
            "lossless": True, "quality": 80, "method": "fastest"}},
    }


def test_server_object_info(server):
    info = server.get("/object_info/FateZeroLoadVideo")["FateZeroLoadVideo"]
    assert info["category"] == "FateZero" and info["display_name"] == NODE
    assert info["output"] == ["IMAGE", "FLOAT", "INT"]
    video = info["input"]["required"]["video"]
    assert "bikes.mp4" in video[0] and video[1]["video_upload"] is True
    assert all(spec[1].get("tooltip") for spec in info["input"]["required"].values())


def test_server_graph_and_rerun_on_change(server):
    entry = server.run(_graph())
    saved = entry["outputs"]["2"]["images"]
    assert len(saved) == 1
    with Image.open(server.output_dir / saved[0]["subfolder"] / saved[0]["filename"]) as webp:
        assert webp.size == (320, 192) and webp.n_frames == 6
        webp.load()  # PIL fills in the frame duration on load
        assert webp.info["duration"] == 80  # 12.5 fps = 25 fps / every_nth 2

    def cached(entry) -> list:
        return next((m[1]["nodes"] for m in entry["status"]["messages"] if m[0] == "execution_cached"), [])

    assert "1" in cached(server.run(_graph()))  # unchanged file: cached
    clip = server.input_dir / "bikes.mp4"
    os.utime(clip, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert "1" not in cached(server.run(_graph()))  # IS_CHANGED saw the new mtime


def test_server_animated_webp_in_and_out(server, node, input_dir):
    shutil.copy(host.template_clip(WEBP), server.input_dir / WEBP)
    video = server.get("/object_info/FateZeroLoadVideo")["FateZeroLoadVideo"]["input"]["required"]["video"]
    assert WEBP in video[0]
    entry = server.run(_graph(WEBP))  # 6 frames from 10 every 2nd: 30 / 2 = 15 fps
    saved = entry["outputs"]["2"]["images"][0]
    out = server.output_dir / saved["subfolder"] / saved["filename"]
    with Image.open(out) as webp:
        assert webp.size == (320, 192) and webp.n_frames == 6
        webp.load()
        assert webp.info["duration"] == 66  # SaveAnimatedWEBP writes int(1000 / 15)
    # What SaveAnimatedWEBP wrote loads back: the chain users build between packs.
    shutil.copy(out, input_dir / "saved.webp")
    images, fps, count = load(node, "saved.webp", frame_count=0, width=320, height=192)
    assert count == 6 and fps == pytest.approx(1000 / 66)


def test_server_errors(server):
    refused = server.post("/prompt", {"prompt": _graph("../secret.mp4"), "client_id": "t"})
    assert refused.get("http_error") == 400
    details = str(refused["node_errors"]["1"])
    assert NODE in details and "'video'" in details and "outside" in details

    (server.input_dir / "cut.mp4").write_bytes((server.input_dir / "bikes.mp4").read_bytes()[:3000])
    err = server.error_of(_graph("cut.mp4"))
    assert err["node_type"] == "FateZeroLoadVideo"
    assert err["exception_message"].startswith(f"{NODE}: input 'video'")
    assert "corrupt, truncated" in err["exception_message"]
