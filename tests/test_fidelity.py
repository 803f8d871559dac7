"""Items of the authors' code (FATEZERO.md section 9) not covered elsewhere: replace
windows, layer coverage, and which inversion call an edit step reuses."""
from __future__ import annotations

import engine_parts as parts
import pytest
import torch


@pytest.mark.parametrize("steps,cross,self_,expect", [
    (10, 0.8, 0.8, (8, 8)),    # int(0.8 * 11) = 8, int(0.8 * 10) = 8
    (50, 0.8, 0.7, (40, 35)),  # int(40.8) = 40, int(35.0) = 35
    (10, 0.5, 0.5, (5, 5)),
    (50, 0.5, 0.5, (25, 25)),
    (10, 0.3, 0.3, (3, 3)),    # int(3.3) = 3 for cross (N + 1), int(3.0) = 3
    (20, 0.8, 0.8, (16, 16)),  # int(16.8) = 16
    (25, 0.9, 0.9, (23, 22)),  # int(23.4) = 23 for cross, int(22.5) = 22 for self: N + 1 vs N
])
def test_replace_windows_use_the_authors_rounding(pack, steps, cross, self_, expect):
    assert pack.fatezero_attn.edit.schedule.replace_step_counts(steps, cross, self_) == expect


def test_only_layers_with_at_most_32x32_queries_are_fused(pack):
    assert pack.fatezero_attn.defaults.FUSE_MAX_QUERY == 1024
    frames, heads = 1, 2
    plan = pack.fatezero_attn.run.plan.FusionPlan(store=None, mapper=torch.eye(77), aligned=torch.ones(77), equalizer=torch.ones(77),
                            cross_steps_per_token=torch.full((77,), 5.0), self_steps=5)
    dispatcher = parts.dispatcher(pack)
    for n, fused in ((32 * 32, True), (64 * 64, False)):
        g = torch.Generator().manual_seed(n)
        q, k, v = (torch.randn(2 * frames, n, 8, generator=g) for _ in range(3))
        side = int(n ** 0.5)
        source = pack.fatezero_attn.run.run_state.SourceAttention(0, {("attn1", ("input", 1, 0)): (q[:1], k[:1])})
        extra = {"n_heads": heads, "fatezero": parts.call_info(pack, ["cond"], frames, plan, 0, source), "block": ("input", 1),
                 "block_index": 0, "original_shape": [1, 4, side, side], "activations_shape": [1, 8, side, side]}
        out = torch.cat([q[:1], dispatcher("attn1", q[1:], k[1:], v[1:], extra)])
        import comfy.ldm.modules.attention as attention
        plain_cond = attention.optimized_attention(q[1:], k[1:], v[1:], heads)
        from_source = attention.optimized_attention(q[:1], k[:1], v[1:], heads)
        if fused:
            torch.testing.assert_close(out[1:], from_source, rtol=1e-4, atol=1e-5)
        else:
            torch.testing.assert_close(out[1:], plain_cond, rtol=1e-4, atol=1e-5)


def test_edit_step_k_reuses_inversion_call_n_minus_1_minus_k(pack):
    fz = pack.fatezero_attn
    steps, frames = 5, 2
    sigmas = torch.tensor([0.03, 0.1, 0.5, 1.0, 3.0, 10.0])
    info = fz.store.attention_store.StoreInfo("m", steps, frames, (4, 4), "per-frame", 0, False)
    inputs = torch.arange(steps, dtype=torch.float32).view(steps, 1, 1, 1, 1).expand(steps, frames, 4, 4, 4).clone()
    store = fz.store.attention_store.AttentionStore(info, sigmas, inputs, torch.zeros(1, 77, 8), torch.zeros(steps, frames, 1, 1, 77))
    plan = fz.run.plan.FusionPlan(store, torch.eye(77), torch.ones(77), torch.ones(77), torch.full((77,), 5.0), 5)
    source_row = fz.run.source_row.SourceRow("FateZero", lambda apply_model, args, x, t, c, chunk: apply_model(x, t, **c))
    run = fz.run.run_state.RunState(plan)
    seen = []
    apply_model = lambda x, t, **c: seen.append((float(x[0, 0, 0, 0]), float(t[0]),
                                                 c["transformer_options"]["cond_or_uncond"])) or x
    for k, sigma in enumerate(store.edit_sigmas.tolist()):  # 10, 3, 1, 0.5, 0.1
        assert source_row.edit_step(plan, sigma * (1 + 5e-5), {}) == k
        args = {"input": torch.zeros(frames, 4, 4, 4), "timestep": torch.full((frames,), sigma), "c": {},
                "cond_or_uncond": [0]}
        source_row.attention(run, k, apply_model, args, {})
        # the UNet input and sigma of inversion call N-1-k, one positive row
        assert seen[-1] == (steps - 1 - k, float(sigmas[steps - k]), [0])
