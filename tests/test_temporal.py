"""Spatio-temporal self-attention: each frame's keys and values come from the frames its
mode names, checked on the attention inputs inside the real UNet."""
from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize("mode,frames,expected", [
    ("per-frame", 4, [[0], [1], [2], [3]]),
    ("middle", 4, [[1], [1], [1], [1]]),           # (F - 1) // 2: frame 1 of 4
    ("middle", 8, [[3]] * 8),                       # frame 3 of 8
    ("current+middle", 4, [[0, 1], [1, 1], [2, 1], [3, 1]]),
    ("first+previous", 4, [[0, 0], [0, 0], [0, 1], [0, 2]]),
])
def test_source_frames(pack, mode, frames, expected):
    assert pack.fatezero_attn.edit.temporal.source_frames(mode, frames) == expected


@pytest.mark.parametrize("mode", ["middle", "current+middle", "first+previous"])
def test_gather_keeps_branches_apart(pack, mode):
    temporal = pack.fatezero_attn.edit.temporal
    frames, chunks, tokens = 4, 2, 3
    # value = 10 * chunk + frame, so every gathered token says where it came from
    ids = torch.tensor([[10 * c + f] for c in range(chunks) for f in range(frames)], dtype=torch.float32)
    t = ids[:, :, None].expand(-1, tokens, 2).contiguous()
    out = temporal.gather_frames(t, frames, mode)
    for c in range(chunks):
        for f, sources in enumerate(temporal.source_frames(mode, frames)):
            row = out[c * frames + f, :, 0]
            assert row.tolist() == [10.0 * c + s for s in sources for _ in range(tokens)]


def test_unet_self_attention_sees_the_named_frames(pack, tiny_model):
    """Run the real tiny UNet with the patch and capture what ComfyUI's attention receives."""
    import comfy.ldm.modules.attention as attention
    hooks = pack.fatezero_attn.run.patch
    frames = 4
    model = tiny_model.clone()
    patch = hooks.FateZeroPatch(pack.fatezero_attn.families.sd_unet.SD1, "current+middle", 64, False)
    patch.install(model)
    seen = []
    real_attn = patch.dispatcher.plain

    def spy(q, k, v, heads, extra):
        seen.append((q.shape, k.clone(), v.shape))
        return real_attn(q, k, v, heads, extra)

    patch.dispatcher.plain = spy
    x = torch.randn(frames, 4, 16, 16)
    cond = torch.randn(frames, 77, 768)
    opts = {"transformer_options": model.model_options["transformer_options"]}
    wrapper = model.model_options["model_function_wrapper"]
    wrapper(model.model.apply_model, {"input": x, "timestep": torch.full((frames,), 1.0),
                                      "c": {"c_crossattn": cond, **opts}, "cond_or_uncond": [0]})
    self_calls = [s for s in seen if s[1].shape[1] != 77]
    assert self_calls
    for q_shape, k, _ in self_calls:
        channels = q_shape[-1]
        if channels < 64:  # below the minimum: per frame
            assert k.shape[1] == q_shape[1]
        else:  # keys of frame i = [frame i ; middle frame 1]
            n = q_shape[1]
            assert k.shape[1] == 2 * n
            for i in range(frames):
                assert torch.equal(k[i, n:], k[1, :n])  # second half: the middle frame's own keys
            own = [k[i, :n] for i in range(frames)]
            assert all(not torch.equal(own[a], own[b]) for a in range(frames) for b in range(a + 1, frames))
    assert any(s[0][-1] < 64 for s in self_calls) and any(s[0][-1] >= 64 for s in self_calls)
