"""The SD benches' model and phases (bench_sd.py, bench_windows.py): an SD1.x checkpoint or a
random-weight SD1.5-layout UNet, CLIP from the checkpoint; plain ``KSamplerAdvanced`` sampling
(ddim, ddim_uniform, CFG 7.5, add_noise disable), the pack's inversion, and fused sampling
without and with the blend mask."""
from __future__ import annotations

import time

import harness
from harness import BLEND_WORDS, REWEIGHT, SOURCE_PROMPT, TARGET_PROMPT, call_node
from sd_store import UNETS


def add_model_options(p) -> None:
    p.add_argument("--unet", choices=list(UNETS), default="checkpoint",
                   help="'checkpoint': the tests' shallow SD1.5-detected checkpoint; 'sd15-lite': SD1.5's 4 levels "
                        "with one ResNet per level; 'sd15': SD1.5's exact UNet (860M parameters); the last two random")
    p.add_argument("--ckpt", help="an SD1.x .safetensors checkpoint to use instead of the random test checkpoint")


def random_unet_patcher(widths: dict, seed: int = 0):
    """A random-weight SD1.5-architecture UNet in ComfyUI's BaseModel/ModelPatcher, dtype as
    ComfyUI's loader would pick it for this device."""
    import torch
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    import models_sd1

    config = comfy.supported_models.SD15(models_sd1._unet_config(widths))
    unet_dtype = mm.unet_dtype(supported_dtypes=config.supported_inference_dtypes)
    config.set_inference_dtype(unet_dtype, mm.unet_manual_cast(unet_dtype, mm.get_torch_device(),
                                                               config.supported_inference_dtypes))
    model = config.get_model({})
    models_sd1.init_random_(model.diffusion_model, seed)
    with torch.no_grad():
        model.diffusion_model.out[-1].weight.mul_(0.1)  # smooth enough to invert (as tests/models_sd1.py)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def load_env(args) -> harness.Env:
    import comfy.model_management as mm
    import comfy.sd
    pack, nodes = harness.load_pack(args.progress)
    ckpt = harness.checkpoint_path(args.ckpt)
    model, clip = comfy.sd.load_checkpoint_guess_config(str(ckpt), output_vae=False)[:2]
    desc = f"checkpoint {ckpt.name}"
    if args.unet != "checkpoint":
        model = random_unet_patcher(UNETS[args.unet])
        desc = f"{args.unet} UNet (random weights), CLIP from {ckpt.name}"
    return harness.Env(pack, nodes, model, clip, mm.get_torch_device(), desc)


class Bench(harness.PhaseBench):
    def __init__(self, env: harness.Env, args):
        super().__init__(env, args, SOURCE_PROMPT, TARGET_PROMPT)
        self.ksampler = env.nodes.KSamplerAdvanced()

    @staticmethod
    def video_latent(frames: int, size: int, seed: int = 0):
        """A video-like latent: one random image plus small per-frame changes (frames x 4 x size/8 x size/8)."""
        import torch
        g = torch.Generator().manual_seed(seed)
        base = torch.randn(1, 4, size // 8, size // 8, generator=g)
        return {"samples": base + 0.3 * torch.randn(frames, 4, size // 8, size // 8, generator=g)}

    def _sample(self, model, latent, steps):
        return self.ksampler.sample(model, "disable", 0, steps, 7.5, "ddim", "ddim_uniform", self.target_cond,
                                    self.negative, latent, 0, 10000, "disable")[0]

    def baseline(self, latent, steps):
        return self._measure(lambda: self._sample(self.model, latent, steps))

    def inversion(self, latent, steps, store_mode: str = "recompute"):
        a = self.args
        def run():
            return call_node(self.inversion_node, model=self.model, source_conditioning=self.source_cond,
                             latent=latent, steps=steps, temporal_mode=a.temporal_mode,
                             temporal_min_channels=a.temporal_min_channels, video_groupnorm=not a.no_video_groupnorm,
                             store_mode=store_mode, cache_replace_steps=max(a.cross_replace, a.self_replace))
        (inverted, store, *_), r = self._measure(run)
        r.update(store_bytes=store.nbytes(), store_bytes_per_frame_step=store.nbytes() / (store.info.frames * store.info.steps))
        return inverted, store, r

    def fused(self, inverted, store, steps, blend: bool, measure: bool = True):
        a = self.args
        def run():
            t0 = time.perf_counter()
            patched = self.fused_model(store, SOURCE_PROMPT, TARGET_PROMPT, a.cross_replace, a.self_replace, REWEIGHT,
                                       BLEND_WORDS if blend else None, a.tau)
            nodes_s = time.perf_counter() - t0
            return self._sample(patched, inverted, steps), nodes_s
        if not measure:
            return run()[0], {}
        (out, nodes_s), r = self._measure(run)
        r.update(nodes_seconds=nodes_s, store_bytes=store.nbytes(),
                 store_bytes_per_frame_step=store.nbytes() / (store.info.frames * store.info.steps))
        return out, r

    def temporal_only(self, latent, steps):
        """Plain sampling through the pack's patch without fusion (spatio-temporal attention +
        video GroupNorm with the inversion's settings): separates their cost from fusion's."""
        a = self.args
        node = self.env.pack.NODE_CLASS_MAPPINGS["FateZeroSpatioTemporalAttention"]()
        def run():
            patched = call_node(node, model=self.model, temporal_mode=a.temporal_mode,
                                temporal_min_channels=a.temporal_min_channels,
                                video_groupnorm=not a.no_video_groupnorm)[0]
            return self._sample(patched, latent, steps)
        return self._measure(run)
