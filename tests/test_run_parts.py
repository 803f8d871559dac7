"""Unit tests of the run's parts (``fatezero_attn/run/``) against a small fake family: the
shared DiT seam bound to no model (3 blocks, patch 1x1x1), so the dispatcher and the source row
are exercised without a diffusion model behind them."""
from __future__ import annotations

import pytest
import torch

HEADS, TOKENS, DIM, CONTEXT = 2, 6, 8, 4


@pytest.fixture
def fz(pack):
    return pack.fatezero_attn


def seam(fz):
    return fz.families.dit.DiTSeam(3, frozenset({1}), (1, 1, 1))


def store(fz, steps: int = 3):
    info = fz.store.attention_store.StoreInfo("fake", steps, 1, (1, TOKENS), "per-frame", 0, False,
                                              model_family="WAN21", fuse_max_query=0, latent_frames=1,
                                              inversion="euler")
    sigmas = torch.linspace(0.0, 1.0, steps + 1)
    return fz.store.attention_store.AttentionStore(info, sigmas, torch.zeros(steps, 1, 1, 1, 1, TOKENS),
                                                   torch.zeros(1, CONTEXT, DIM), torch.zeros(steps, 1, 1, TOKENS, CONTEXT))


def plan(fz, steps: int = 3, self_steps: int = 2, **kw):
    return fz.run.plan.FusionPlan(store(fz, steps), torch.eye(CONTEXT), torch.ones(CONTEXT), torch.ones(CONTEXT),
                                   torch.zeros(CONTEXT), self_steps, max_query=0, fused_sites=frozenset({1}), **kw)


def attend(q, k, v, heads):
    from comfy.ldm.modules.attention import optimized_attention
    return optimized_attention(q, k, v, heads)


def extra(info, block: int) -> dict:
    return {"n_heads": HEADS, "fatezero": info, "block": block, "attention_fn": attend}


def qkv(seed: int, rows: int = 2):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(rows, TOKENS, DIM, generator=g) for _ in range(3)]


def test_dispatcher_fuses_the_positive_rows_of_fused_sites_within_the_replace_steps(fz):
    dispatcher = fz.run.dispatch.Dispatcher(seam(fz), node="Fake Fusion")
    q, k, v = qkv(0)
    q_src, k_src, _ = qkv(1, rows=1)
    p = plan(fz)
    run = fz.run.run_state.RunState(p)
    for step in range(3):
        source = fz.run.run_state.SourceAttention(step, {("attn1", 1): (q_src, k_src)})
        info = fz.run.call_info.CallInfo(["cond", "uncond"], 1, run, step, source, grid=(1, 1, TOKENS))
        for block in range(3):
            out = dispatcher("attn1", q, k, v, extra(info, block))
            plain = attend(q, k, v, HEADS)
            assert torch.equal(out[1:], plain[1:])  # the negative row: plain
            if block == 1 and step < p.self_steps:  # P_src v_edit
                torch.testing.assert_close(out[:1], attend(q_src, k_src, v[:1], HEADS))
            else:
                assert torch.equal(out[:1], plain[:1])


def test_source_pass_keeps_the_fused_sites_and_stops_after_the_last(fz):
    dispatcher = fz.run.dispatch.Dispatcher(seam(fz))
    q, k, v = qkv(2, rows=1)
    run = fz.run.run_state.RunState(plan(fz))
    source = fz.run.run_state.SourceAttention(0)
    info = fz.run.call_info.CallInfo(["source"], 1, run, 0, source, grid=(1, 1, TOKENS))
    assert torch.equal(dispatcher("attn1", q, k, v, extra(info, 0)), attend(q, k, v, HEADS))
    assert source.qk == {}  # block 0 is not fused
    dispatcher("attn1", q, k, v, extra(info, 1))  # no stop yet: the run does not know the last site
    assert set(source.qk) == {("attn1", 1)} and source.qk[("attn1", 1)][0] is q
    run.fused_layers = [("attn1", 1)]
    with pytest.raises(fz.run.source_row.SourcePassDone):
        dispatcher("attn1", q, k, v, extra(info, 1))


def test_a_fused_site_without_the_source_row_stops_with_the_node_named(fz):
    dispatcher = fz.run.dispatch.Dispatcher(seam(fz), node="Fake Fusion")
    q, k, v = qkv(3)
    run = fz.run.run_state.RunState(plan(fz))
    info = fz.run.call_info.CallInfo(["cond", "uncond"], 1, run, 0, fz.run.run_state.SourceAttention(0),
                                     grid=(1, 1, TOKENS))
    with pytest.raises(fz.errors.FateZeroError, match="Fake Fusion: at attn1 of block 1"):
        dispatcher("attn1", q, k, v, extra(info, 1))


def test_a_call_without_the_model_wrapper_is_refused_on_a_patched_model(fz):
    q, k, v = qkv(4)
    plain_only = fz.run.dispatch.Dispatcher(seam(fz))
    out = plain_only("attn1", q, k, v, {"n_heads": HEADS, "block": 0, "attention_fn": attend})
    assert torch.equal(out, attend(q, k, v, HEADS))  # spatio-temporal only: plain attention
    patched = fz.run.dispatch.Dispatcher(seam(fz), node="Fake Fusion", patched=True)
    with pytest.raises(fz.errors.FateZeroError, match="without FateZero's model wrapper"):
        patched("attn1", q, k, v, {"n_heads": HEADS, "block": 0, "attention_fn": attend})


def test_source_row_edit_steps_and_refusals(fz):
    row = fz.run.source_row.SourceRow("Fake Fusion", call_model=None)
    p = plan(fz)
    for step, sigma in enumerate(p.store.edit_sigmas.tolist()):
        assert row.edit_step(p, sigma, {}) == step and p.inversion_call(step) == p.store.info.steps - 1 - step
    with pytest.raises(fz.errors.FateZeroError, match="edit_sigmas"):  # a flow store: its sampler's fix
        row.edit_step(p, 0.123, {})
    high = plan(fz, expert="high")
    high.store.info.expert_boundary = 0.5
    assert row.edit_step(high, float(high.store.edit_sigmas[0]), {}) == 0
    with pytest.raises(fz.errors.FateZeroError, match="low-noise expert"):
        row.edit_step(high, float(high.store.edit_sigmas[-1]), {})


def test_source_row_reuses_a_step_and_frees_the_previous(fz):
    calls = []

    def call_model(apply_model, args, x, t, c, chunk):
        calls.append(float(t[0]))
        return x

    row = fz.run.source_row.SourceRow("Fake Fusion", call_model)
    run = fz.run.run_state.RunState(plan(fz))
    args = {"input": torch.zeros(1, 1, 1, 1, TOKENS), "timestep": torch.ones(1), "c": {}, "cond_or_uncond": [0]}
    first = row.attention(run, 0, None, args, {})
    assert row.attention(run, 0, None, args, {}) is first and len(calls) == 1  # a second call of step 0
    second = row.attention(run, 1, None, args, {})
    assert second is not first and run.source is second and len(calls) == 2
    run.end()
    assert run.source is None
