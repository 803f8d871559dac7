"""Fused attention (computed on outputs, never materialising maps) equals the naive
formulas on materialised attention maps, for every Prompt-to-Prompt variant."""
from __future__ import annotations

import engine_parts as parts
import pytest
import torch


@pytest.fixture(scope="module")
def fz(pack):
    return pack.fatezero_attn


def maps(fz, q, k, heads):
    return fz.edit.attention_fusion.attention_probs(q, k, heads)  # [B, heads, Nq, Nk]


def apply_maps(P, v, heads):
    b, n, inner = v.shape
    vh = v.view(b, n, heads, inner // heads).transpose(1, 2)
    return (P @ vh).transpose(1, 2).reshape(b, -1, inner)


def qkv(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=torch.float64) for s in shape]


HEADS = 4


@pytest.mark.parametrize("masked", [False, True])
def test_self_attention_fusion_matches_blended_maps(fz, masked):
    q_s, k_s, q_e, k_e, v_e = qkv((3, 16, 32), (3, 32, 32), (3, 16, 32), (3, 32, 32), (3, 32, 32), seed=1)
    M = (torch.rand(3, 16, 1, generator=torch.Generator().manual_seed(2)) > 0.5).double() if masked else None
    P_src, P_edit = maps(fz, q_s, k_s, HEADS), maps(fz, q_e, k_e, HEADS)
    # naive: s_fused = M * s_edit + (1 - M) * s_src, rows of the map selected by M
    if masked:
        Mh = M[:, None]  # [B, 1, Nq, 1] over heads
        P = Mh * P_edit + (1 - Mh) * P_src
    else:
        P = P_src
    naive = apply_maps(P, v_e, HEADS)
    edit_out = apply_maps(P_edit, v_e, HEADS)
    fused = fz.edit.attention_fusion.fused_self_attention(q_s, k_s, v_e, HEADS, edit_out, M)
    torch.testing.assert_close(fused, naive, rtol=1e-10, atol=1e-10)


def p2p_cross(P_src, P_edit, mapper=None, refine=None, equalizer=None, alpha_words=None):
    """Prompt-to-Prompt's controller arithmetic on maps [B, heads, Nq, 77]."""
    if refine is not None:
        idx, alphas = refine
        base = P_src[..., idx] * alphas + P_edit * (1 - alphas)
    else:
        base = torch.einsum("bhpw,wn->bhpn", P_src, mapper)
    if equalizer is not None:
        base = base * equalizer
    return base * alpha_words + (1 - alpha_words) * P_edit


def cross_case(fz, seed):
    q_s, q_e = qkv((2, 20, 32), (2, 20, 32), seed=seed)
    k_s, k_e, v_e = qkv((2, 77, 32), (2, 77, 32), (2, 77, 32), seed=seed + 1)
    return q_s, k_s, q_e, k_e, v_e, maps(fz, q_s, k_s, HEADS), maps(fz, q_e, k_e, HEADS)


def words(lengths):
    t = 100
    out = []
    for n in lengths:
        out.append(list(range(t, t + n)))
        t += n
    return out


@pytest.mark.parametrize("reweight", [False, True])
@pytest.mark.parametrize("per_word", [False, True])
def test_cross_replace_matches_p2p(fz, reweight, per_word):
    q_s, k_s, q_e, k_e, v_e, P_src, P_edit = cross_case(fz, 3)
    src, tgt = words([1, 2, 1, 1]), words([1, 1, 3, 1])  # word 2 and 3 change token counts
    S = fz.edit.alignment.replace_mapper(src, tgt).double()
    eq = torch.ones(77, dtype=torch.float64)
    if reweight:
        eq[3] = 10.0
    active = torch.ones(77, dtype=torch.float64)
    if per_word:
        active[2:5] = 0.0  # these target tokens are past their own window at this step
    naive = apply_maps(p2p_cross(P_src, P_edit, mapper=S, equalizer=eq, alpha_words=active), v_e, HEADS)
    R, D = fz.edit.attention_fusion.cross_weights(S, torch.ones(77, dtype=torch.float64), eq, active)
    fused = fz.edit.attention_fusion.fused_cross_attention(q_s, k_s, q_e, k_e, v_e, R, D, HEADS)
    torch.testing.assert_close(fused, naive, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("reweight", [False, True])
def test_cross_refine_matches_p2p(fz, reweight):
    q_s, k_s, q_e, k_e, v_e, P_src, P_edit = cross_case(fz, 5)
    src = [[10], [11], [12]]
    tgt = [[20], [21], [10], [11], [12]]  # two new words in front
    S, aligned = fz.edit.alignment.refine_mapper(src, tgt)
    S, aligned = S.double(), aligned.double()
    idx = S.argmax(0)  # the source column each target column reads
    eq = torch.ones(77, dtype=torch.float64)
    if reweight:
        eq[1] = 10.0
    active = torch.ones(77, dtype=torch.float64)
    naive = apply_maps(p2p_cross(P_src, P_edit, refine=(idx, aligned), equalizer=eq, alpha_words=active), v_e, HEADS)
    R, D = fz.edit.attention_fusion.cross_weights(S, aligned, eq, active)
    fused = fz.edit.attention_fusion.fused_cross_attention(q_s, k_s, q_e, k_e, v_e, R, D, HEADS)
    torch.testing.assert_close(fused, naive, rtol=1e-10, atol=1e-10)


def test_outside_window_is_plain_attention(fz):
    q_s, k_s, q_e, k_e, v_e, P_src, P_edit = cross_case(fz, 7)
    S = torch.eye(77, dtype=torch.float64)
    R, D = fz.edit.attention_fusion.cross_weights(S, torch.ones(77, dtype=torch.float64), torch.full((77,), 10.0, dtype=torch.float64),
                                   torch.zeros(77, dtype=torch.float64))
    fused = fz.edit.attention_fusion.fused_cross_attention(q_s, k_s, q_e, k_e, v_e, R, D, HEADS)
    torch.testing.assert_close(fused, apply_maps(P_edit, v_e, HEADS), rtol=1e-10, atol=1e-10)


def test_dispatcher_fuses_only_the_positive_rows(fz, pack):
    """Through the real hook and ComfyUI's attention: cond/uncond chunks of 2 frames, the
    source row's q and k handed over by the source pass."""
    import comfy.ldm.modules.attention as attention
    frames, heads = 2, 2
    q, k, v = [t.float() for t in qkv((3 * frames, 16, 32), (3 * frames, 77, 32), (3 * frames, 77, 32), seed=9)]
    store = type("S", (), {})()
    plan = fz.run.plan.FusionPlan(store=store, mapper=torch.eye(77), aligned=torch.ones(77), equalizer=torch.ones(77),
                               cross_steps_per_token=torch.full((77,), 5.0), self_steps=5)
    dispatcher = parts.dispatcher(pack)
    key = ("input", 1, 0)
    source = fz.run.run_state.SourceAttention(0, {("attn2", key): (q[:frames], k[:frames])})
    extra = {"n_heads": heads, "fatezero": parts.call_info(pack, ["cond", "uncond"], frames, plan, 0, source),
             "block": key[:2], "block_index": 0,
             "original_shape": [frames, 4, 16, 16], "activations_shape": [frames, 32, 4, 4], "cond_or_uncond": [0, 1]}
    out = dispatcher("attn2", q[frames:], k[frames:], v[frames:], extra)
    plain = attention.optimized_attention(q, k, v, heads)
    torch.testing.assert_close(out[frames:], plain[2 * frames:])  # negative branch untouched
    replaced = attention.optimized_attention(q[:frames], k[:frames], v[frames:2 * frames], heads)
    torch.testing.assert_close(out[:frames], replaced, rtol=1e-5, atol=1e-5)  # P_src v_edit
    assert not torch.allclose(out[:frames], plain[frames:2 * frames])
