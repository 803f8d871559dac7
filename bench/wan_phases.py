"""The Wan bench's model and phases (bench_wan.py): a random-weight ``WanModel`` loaded through
ComfyUI's diffusion-model loader, a smooth video-like latent, and the four phases."""
from __future__ import annotations

import harness
from harness import call_node


def build_model(args):
    """A random-weight ``WanModel`` of the requested widths through ComfyUI's diffusion-model
    loader (state dict -> ``load_diffusion_model_state_dict``, as ``UNETLoader`` does after reading
    the file). Peak RAM: the state dict plus the loaded copy, both in ``--dtype`` when it is
    given (bf16: 2 x 10 GB for the 5B shape), else the float32 state dict plus ComfyUI's pick."""
    import torch
    import comfy.sd
    import models_wan
    dtype = {"auto": None, "fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    sd = models_wan.wan_model(seed=0, dim=args.dim, num_layers=args.layers, ffn_dim=args.ffn, channels=args.channels,
                              dtype=dtype or torch.float32).state_dict()
    params = sum(v.numel() for v in sd.values())
    patcher = comfy.sd.load_diffusion_model_state_dict(sd, {} if dtype is None else {"dtype": dtype})
    del sd  # popped by the loader; the source tensors go with the dict
    if patcher is None:
        raise RuntimeError("ComfyUI did not detect the random WanModel")
    return patcher, params


def add_tiny_world_options(p) -> None:
    """The few-step benches' model options: the tests' tiny random Wan, shift 5 as the templates."""
    p.add_argument("--steps", default="4,8,30")
    p.add_argument("--shift", type=float, default=5.0)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--ffn", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)


def tiny_world(args):
    """``(pack, core node classes, shifted MODEL, Wan CLIP)`` for the few-step benches: the random
    ``WanModel`` of ``args`` through ComfyUI's loader, ModelSamplingSD3 at ``args.shift``, and the
    tests' umT5 with a trained SentencePiece model."""
    harness.start_comfy("cpu", args.threads)
    import comfy.sd
    import models_wan
    pack, nodes = harness.load_pack(False)
    core = nodes.NODE_CLASS_MAPPINGS
    sd = models_wan.wan_model(seed=args.seed, dim=args.dim, num_layers=args.layers, ffn_dim=args.ffn).state_dict()
    model = core["ModelSamplingSD3"]().patch(comfy.sd.load_diffusion_model_state_dict(sd), args.shift)[0]
    return pack, core, model, models_wan.wan_text_encoder(models_wan.train_spiece())


def smooth_video(latent_frames: int, h: int, w: int, channels: int = 16, seed: int = 0):
    """A video-like latent ``[1, channels, T, h, w]``: low-frequency noise drifting over the frames."""
    import torch
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, channels, 1, max(h // 4, 2), max(w // 4, 2) + latent_frames, generator=g)
    base = torch.nn.functional.interpolate(base, size=(1, h, w + 2 * latent_frames), mode="trilinear")
    return {"samples": torch.cat([base[..., 2 * t:2 * t + w] for t in range(latent_frames)], 2).contiguous()}


class WanBench(harness.PhaseBench):
    """The phases on one Wan MODEL: plain ``SamplerCustomAdvanced`` sampling (``CFGGuider``, euler), the
    pack's inversion, and the fused and blend edits."""

    def __init__(self, env: harness.Env, args):
        super().__init__(env, args, args.source, args.target)
        core = env.nodes.NODE_CLASS_MAPPINGS
        self.guider_node, self.sampler_node = core["CFGGuider"](), core["SamplerCustomAdvanced"]()
        self.euler = core["KSamplerSelect"]().get_sampler("euler")[0]

    def sample(self, model, inverted: dict):
        """SamplerCustomAdvanced as the Wan workflow wires it: the inversion's noise, sigmas and latent, euler."""
        latent, sigmas, noise = inverted["inverted_latent"], inverted["edit_sigmas"], inverted["inverted_noise"]
        guider = self.guider_node.get_guider(model, self.target_cond, self.negative, self.args.cfg)[0]
        return self.sampler_node.sample(noise, guider, self.euler, sigmas, latent)[0]["samples"]

    def warm_up(self, latent):
        """One plain CFG step on ComfyUI's own noise and schedule (model load, first calls)."""
        import comfy.samplers
        core = self.env.nodes.NODE_CLASS_MAPPINGS
        noise = core["RandomNoise"]().get_noise(0)[0]
        sigmas = comfy.samplers.calculate_sigmas(self.model.get_model_object("model_sampling"), "simple", 1).cpu()
        guider = self.guider_node.get_guider(self.model, self.target_cond, self.negative, self.args.cfg)[0]
        return self._measure(lambda: self.sampler_node.sample(noise, guider, self.euler, sigmas, latent))[1]

    def inversion(self, latent):
        a = self.args
        run = lambda: call_node(self.inversion_node, model=self.model, source_conditioning=self.source_cond,
                                latent=latent, steps=a.steps, temporal_mode="per-frame", temporal_min_channels=0,
                                video_groupnorm=False, store_mode="auto", window=0, flow_inversion=a.inversion,
                                fixed_point_iterations=a.iterations, blend_blocks=a.blend_blocks)
        outputs, r = self._measure(run)
        inverted = dict(zip(type(self.inversion_node).RETURN_NAMES, outputs))  # by name: outputs may be added
        r["store_bytes"] = inverted["attention_store"].nbytes()
        return inverted, r

    def plain(self, inverted):
        return self._measure(lambda: self.sample(self.model, inverted))

    def fused(self, inverted, blend: bool):
        """The fusion (and blend) nodes, then the sampling; the times are both's, the memory the
        sampling's (the nodes' own peak, the CLIP encoding the target prompt, is not the edit's)."""
        import time
        a = self.args
        wall, cpu = time.perf_counter(), time.process_time()
        patched = self.fused_model(inverted["attention_store"], a.source, a.target, a.replace, a.replace, a.reweight,
                                   a.blend_words if blend else None, a.tau, fused_blocks=a.fused_blocks)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        out, r = self._measure(lambda: self.sample(patched, inverted))
        r.update(seconds=r["seconds"] + wall, cpu_seconds=r["cpu_seconds"] + cpu, node_seconds=wall)
        return out, r
