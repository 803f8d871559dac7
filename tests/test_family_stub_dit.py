"""A third model family written as a test fixture: a stub video DiT that reuses the shared DiT
base (``families/dit.py``). Only the families package's ``register`` and this file are needed:
detection, the block seam, the inversion's capture and the source row's fusion then work on it."""
from __future__ import annotations

import pytest
import torch

HEADS, DIM, TOKENS, BLOCKS = 2, 16, 5, 3


class StubBlock(torch.nn.Module):
    """Self-attention over all tokens, then cross-attention to the context, as ComfyUI's DiTs
    call attention: ``optimized_attention(..., transformer_options=...)``."""

    def __init__(self, g: torch.Generator):
        super().__init__()
        w = lambda: torch.nn.Parameter(torch.randn(DIM, DIM, generator=g) / DIM ** 0.5)
        self.q1, self.k1, self.v1, self.q2, self.k2, self.v2 = (w() for _ in range(6))

    def forward(self, x, context, transformer_options):
        from comfy.ldm.modules.attention import optimized_attention
        x = x + optimized_attention(x @ self.q1, x @ self.k1, x @ self.v1, HEADS, transformer_options=transformer_options)
        return x + optimized_attention(x @ self.q2, context @ self.k2, context @ self.v2, HEADS,
                                       transformer_options=transformer_options)


class StubDiT(torch.nn.Module):
    """Latent ``[1, DIM, T, H, W]`` -> tokens ``[1, T*H*W, DIM]`` (patch 1x1x1) -> blocks -> latent."""
    patch_size = (1, 1, 1)

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.blocks = torch.nn.ModuleList(StubBlock(g) for _ in range(BLOCKS))

    def forward(self, x, t, context, transformer_options):
        shape = x.shape
        h = x.flatten(2).transpose(1, 2)
        replace = transformer_options.get("patches_replace", {}).get("dit", {})
        for i, block in enumerate(self.blocks):
            run = lambda args, block=block: {"img": block(args["img"], args["txt"], args["transformer_options"])}
            args = {"img": h, "txt": context, "transformer_options": transformer_options}
            h = replace[("double_block", i)](args, {"original_block": run})["img"] if ("double_block", i) in replace \
                else run(args)["img"]
        return h.transpose(1, 2).reshape(shape)


class StubBase(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.diffusion_model = StubDiT()

    def apply_model(self, x, t, c_crossattn=None, transformer_options=None, **_):
        return self.diffusion_model(x, t, c_crossattn, dict(transformer_options or {}))


@pytest.fixture
def stub(pack):
    """The stub family, registered for the test only."""
    dit, families = pack.fatezero_attn.families.dit, pack.fatezero_attn.families

    class StubFamily(dit.DiTFamily):
        default_fused_blocks = "1"
        default_blend_blocks = "1-2"

    family = StubFamily("STUB-DIT", 256, 8, 4)
    detect = lambda mp: family if isinstance(mp.model.diffusion_model, StubDiT) else None
    families.register([family], detect)
    yield family
    families.unregister([family], detect)


def patcher():
    import comfy.model_patcher
    return comfy.model_patcher.ModelPatcher(StubBase(), torch.device("cpu"), torch.device("cpu"))


def call(m, x, sigma: float, context):
    """One model call through the installed model wrapper, as ComfyUI's sampler makes it."""
    opts = {"transformer_options": m.model_options["transformer_options"]}
    return m.model_options["model_function_wrapper"](m.model.apply_model, {
        "input": x, "timestep": torch.tensor([sigma]), "c": {"c_crossattn": context, **opts}, "cond_or_uncond": [0]})


def latent(seed: int, frames: int = 2) -> torch.Tensor:
    return torch.randn(1, DIM, frames, 2, 3, generator=torch.Generator().manual_seed(seed))


def test_the_stub_family_is_found_and_labels_every_block(pack, stub, monkeypatch):
    fz = pack.fatezero_attn
    m = patcher()
    assert fz.families.family_of(m) is stub and fz.families.FAMILIES["STUB-DIT"] is stub
    assert stub.fused_sites(m.model.diffusion_model, "auto") == frozenset({1})
    seen = []
    real = fz.run.dispatch.Dispatcher.__call__

    def spy(self, attn, q, k, v, extra):
        seen.append((attn, extra["block"], extra["fatezero"].grid))
        return real(self, attn, q, k, v, extra)

    monkeypatch.setattr(fz.run.dispatch.Dispatcher, "__call__", spy)
    x, context = latent(1), torch.randn(1, TOKENS, DIM)
    plain = m.model.apply_model(x, torch.tensor([0.5]), context, {})
    patched = m.clone()
    rec = fz.run.capture.Recorder(torch.tensor([0.0, 0.5, 1.0]))
    fz.run.patch.FateZeroPatch(stub, recorder=rec, blend_choice="auto").install(patched)
    rec.record_input(0, x)
    out = call(patched, x, 0.5, context)
    assert torch.equal(out, plain)  # labelled and captured, the call computes what it did
    assert seen == [(attn, b, (2, 2, 3)) for b in range(BLOCKS) for attn in ("attn1", "attn2")]
    # the inversion's capture: the blend blocks' (1 and 2) cross-attention maps, [T, h, w, tokens]
    assert rec.cross_count[0] == 2 and rec.cross_sum[0].shape == (2, 2, 3, TOKENS)


def test_the_stub_family_fuses_its_source_row(pack, stub):
    """Fusion at the fused block (1) through the source row: a source equal to the edit gives the
    plain output; another source changes it; fractions 0 leave the call as it was."""
    fz = pack.fatezero_attn
    steps, context = 2, torch.randn(1, TOKENS, DIM)
    sigmas = torch.tensor([0.0, 0.5, 1.0])
    x = latent(2)

    def edit(source_latent, self_steps: int):
        info = fz.store.attention_store.StoreInfo("stub", steps, 1, (2, 3), "per-frame", 0, False, model_family="STUB-DIT",
                                                  fuse_max_query=0, latent_frames=2, inversion="euler")
        inputs = source_latent.expand(steps, *source_latent.shape).clone()  # [steps, rows, C, T, h, w]
        store = fz.store.attention_store.AttentionStore(info, sigmas, inputs, context, torch.zeros(steps, 2, 2, 3, TOKENS))
        m = patcher()
        plan = fz.run.plan.FusionPlan(store, torch.eye(TOKENS), torch.ones(TOKENS), torch.ones(TOKENS),
                                       torch.zeros(TOKENS), self_steps, max_query=0,
                                       fused_sites=stub.fused_sites(m.model.diffusion_model, "auto"))
        fz.run.patch.FateZeroPatch(stub, plan=plan).install(m)
        return call(m, x, float(store.edit_sigmas[0]), context)

    plain = patcher().model.apply_model(x, torch.tensor([1.0]), context, {})
    assert torch.equal(edit(latent(3), 0), plain)  # fractions 0: the call as without the pack
    torch.testing.assert_close(edit(x, steps), plain)  # the source is the edit: fusing changes nothing
    assert not torch.allclose(edit(latent(3), steps), plain, atol=1e-3)  # another source: block 1 fused


class Container:
    """Shaped as ComfyUI 0.38's ``AttentionTensorContainer``: its one owner takes the tensor."""
    __slots__ = ("tensor",)

    def __init__(self, tensor):
        self.tensor = tensor

    def take(self):
        tensor, self.tensor = self.tensor, None
        return tensor


def test_attention_tensor_containers_are_unwrapped_by_the_override(pack):
    """Wan's blocks in ComfyUI 0.38 call ``optimized_attention(q, k, v, heads=...)`` with q, k, v
    in containers; the override takes the tensors out whether or not ComfyUI did already."""
    dit = pack.fatezero_attn.families.dit
    q, k, v = (torch.randn(1, TOKENS, DIM, generator=torch.Generator().manual_seed(i)) for i in range(3))
    backend_got, dispatched = [], []

    def backend(q_, k_, v_, heads, **kwargs):
        backend_got.append((q_, k_, v_, heads))
        return q_

    def dispatcher(attn, q_, k_, v_, extra):
        dispatched.append((attn, q_, k_, v_, extra["n_heads"]))
        return q_

    override = dit.BlockAttention(dispatcher)
    boxes = [Container(t) for t in (q, k, v)]
    override(backend, *boxes, heads=HEADS, transformer_options={})  # not a labelled block: the backend's
    assert backend_got[0][3] == HEADS and all(a is b for a, b in zip(backend_got[0][:3], (q, k, v)))
    assert all(box.tensor is None for box in boxes)
    opts = {dit.SITE: dit.BlockSite(0), "fatezero": object()}
    override(backend, *(Container(t) for t in (q, k, v)), heads=HEADS, transformer_options=opts)
    assert dispatched[0][0] == "attn1" and dispatched[0][4] == HEADS
    assert all(a is b for a, b in zip(dispatched[0][1:4], (q, k, v)))
    override(backend, q, k, v, HEADS, transformer_options=opts)  # tensors pass as they are
    assert dispatched[1][0] == "attn2" and all(a is b for a, b in zip(dispatched[1][1:4], (q, k, v)))
