"""The Wan workflows (issue 24): Wan 2.1 T2V 1.3B, Wan 2.2 TI2V 5B, and Wan 2.2 A14B's two experts."""
from __future__ import annotations

from .clips import BICYCLE, LOCAL_BLEND, LOCAL_TARGET, RABBIT, STYLE_TARGET, WAN_NEGATIVE, Clip
from .graph import GROUP_COLORS, NOTE_X, X0, X2, X3, Group, Node, Workflow
from .model_files import (UMT5, WAN21_T2V_1_3B, WAN21_VAE, WAN22_T2V_HIGH, WAN22_T2V_LIGHTX2V_HIGH,
                          WAN22_T2V_LIGHTX2V_LOW, WAN22_T2V_LOW, WAN22_TI2V_5B, WAN22_VAE)
from .notes import BLEND_LINE, EXPERT_HANDOVER_LINE, LOCAL_LINE, MORE, WAN_STYLE_LINE, clip_line, note, wan_run
from .parts import add_blend_branch, decode_and_save, fusion_node, load_video, prompt_nodes, stage_groups


def wan_graph(*, unet: str, vae: str, clip: Clip, start: int, nth: int, target: str, cross: float, self_: float,
              mapping: str, reweight: str, prefix: str, frames: int, width: int, height: int, steps: int, cfg: float,
              shift: float, fps: float, blend: dict | None = None, high_noise_unet: str | None = None,
              boundary: float = 0.875, iterations: int = 1) -> tuple[list[Node], list[Group]]:
    """The FateZero graph on Wan: core loaders, the inversion's noise and sigmas into
    SamplerCustomAdvanced; with ``high_noise_unet`` the two experts of Wan 2.2 A14B, split at
    the inversion's expert_split_step."""
    source = clip.source
    fusion = dict(source=source, target=target, cross=cross, self_=self_, mapping=mapping, reweight=reweight)
    n = [
        Node(1, "UNETLoader", (X0 + 20, 80), (360, 82), {"unet_name": unet, "weight_dtype": "default"},
             title="Load Diffusion Model (low-noise expert)" if high_noise_unet else None),
        Node(21, "CLIPLoader", (X0 + 20, 200), (360, 106), {"clip_name": UMT5, "type": "wan", "device": "default"}),
        Node(22, "VAELoader", (X0 + 20, 340), (360, 58), {"vae_name": vae}),
        Node(24, "ModelSamplingSD3", (X0 + 20, 430), (360, 58), {"shift": shift}, {"model": (1, 0)},
             title="ModelSamplingSD3 (Wan's shift)"),
        load_video(clip, (X0 + 20, 520), frames, start, nth, width, height),
        Node(3, "VAEEncode", (X0 + 20, 1120), (210, 46), links={"pixels": (2, 0), "vae": (22, 0)}),
        *prompt_nodes(source, target, (21, 0), WAN_NEGATIVE, "Encode negative prompt"),
        Node(9, "FateZeroDDIMInversion", (X2 + 20, 80), (400, 400),
             {"steps": steps, "temporal_mode": "per-frame", "temporal_min_channels": 0, "video_groupnorm": False,
              "clean_sigma": "0 (ComfyUI)", "store_mode": "recompute", "cache_replace_steps": 0.8, "window": 0,
              "flow_inversion": "fixed-point", "fixed_point_iterations": iterations, "blend_blocks": "auto",
              "expert_boundary": boundary},
             {"model": (24, 0), "source_conditioning": (6, 0), "latent": (3, 0)},
             title="FateZero Inversion (Euler flow, fixed-point)"),
        fusion_node(10, (X3 + 20, 80), (380, 340), (24, 0), (21, 0), **fusion,
                    title="FateZero Attention Fusion (low-noise expert)" if high_noise_unet else None),
        Node(23, "CFGGuider", (X3 + 20, 470), (380, 98), {"cfg": cfg},
             {"model": (10, 0), "positive": (7, 0), "negative": (8, 0)}, title="CFGGuider (the fused MODEL)"),
        Node(20, "KSamplerSelect", (X3 + 20, 610), (380, 58), {"sampler_name": "euler"}, title="KSamplerSelect (euler)"),
        Node(11, "SamplerCustomAdvanced", (X3 + 20, 710), (380, 330), {},
             {"noise": (9, 3), "guider": (23, 0), "sampler": (20, 0), "sigmas": (9, 2), "latent_image": (9, 0)},
             title="SamplerCustomAdvanced (edit from the inverted noise)"),
        *decode_and_save((22, 0), fps, prefix),
    ]
    groups = stage_groups("1. Models and video", 1200, 500, 1080)
    by_id = {node.id: node for node in n}
    if high_noise_unet:
        n += [
            Node(25, "UNETLoader", (X0 - 400, 80), (360, 82), {"unet_name": high_noise_unet, "weight_dtype": "default"},
                 title="Load Diffusion Model (high-noise expert)"),
            Node(26, "ModelSamplingSD3", (X0 - 400, 200), (360, 58), {"shift": shift}, {"model": (25, 0)},
                 title="ModelSamplingSD3 (high-noise expert)"),
            fusion_node(27, (X3 + 20, 1120), (380, 340), (26, 0), (21, 0), **fusion,
                        title="FateZero Attention Fusion (high-noise expert)"),
            Node(28, "CFGGuider", (X3 + 20, 1500), (380, 98), {"cfg": cfg},
                 {"model": (27, 0), "positive": (7, 0), "negative": (8, 0)}, title="CFGGuider (high-noise expert)"),
            Node(29, "SplitSigmas", (X2 + 20, 540), (400, 78), {"step": 0}, {"sigmas": (9, 2), "step": (9, 4)},
                 title="SplitSigmas (at the inversion's expert_split_step)"),
            Node(30, "SamplerCustomAdvanced", (X3 + 20, 1640), (380, 330), {},
                 {"noise": (9, 3), "guider": (28, 0), "sampler": (20, 0), "sigmas": (29, 0), "latent_image": (9, 0)},
                 title="SamplerCustomAdvanced (high-noise steps)"),
            Node(31, "DisableNoise", (X3 + 20, 2010), (380, 26), title="DisableNoise (continue the high-noise steps)"),
        ]
        by_id[9].links["model_high_noise"] = (26, 0)
        by_id[11].links.update({"noise": (31, 0), "sigmas": (29, 1), "latent_image": (30, 0)})
        by_id[11].title = "SamplerCustomAdvanced (low-noise steps)"
        by_id[23].title = "CFGGuider (low-noise expert)"
        groups[0] = Group("1. Models and video", (X0 - 420, 0, 820, 1200), GROUP_COLORS["input"])
        groups[3] = Group("4. Edit (fused attention), one sampler per expert", (X3, 0, 420, 2060), GROUP_COLORS["edit"])
    if blend is not None:
        add_blend_branch(n, groups, source=source, blend=blend, clip=(21, 0), prefix=prefix, y=660, group_y=620)
    return n, groups


def left_of_the_experts(readme: Node) -> Node:
    """The Read-me Note moved left of the high-noise expert's column, which sits where Notes go."""
    readme.pos = (NOTE_X - 420, 0)
    return readme


def wan21_style_edit() -> Workflow:
    target = STYLE_TARGET + BICYCLE.source
    nodes, groups = wan_graph(unet=WAN21_T2V_1_3B, vae=WAN21_VAE, clip=BICYCLE, start=200, nth=1, target=target,
                              cross=0.8, self_=0.8, mapping="refine", reweight="watercolor:4",
                              prefix="fatezero/wan21_style_watercolor_bicycle", frames=33, width=832, height=480,
                              steps=30, cfg=5.0, shift=8.0, fps=16.0)
    nodes.append(note(
        "FateZero on Wan 2.1 T2V 1.3B: a parked bicycle -> watercolor painting; 33 frames at 832x480, 30 steps, "
        "CFG 5, shift 8.", clip_line(nodes), *wan_run(WAN21_T2V_1_3B, WAN21_VAE), WAN_STYLE_LINE, MORE))
    return Workflow("fatezero_wan21_style_edit", "Wan 2.1 style edit: watercolor bicycle", nodes, groups)


def wan22_5b_local_edit() -> Workflow:
    nodes, groups = wan_graph(unet=WAN22_TI2V_5B, vae=WAN22_VAE, clip=RABBIT, start=40, nth=1, target=LOCAL_TARGET,
                              cross=0.7, self_=0.7, mapping="replace", reweight="",
                              prefix="fatezero/wan22_5b_local_pink_rabbit", frames=49, width=1280, height=704,
                              steps=30, cfg=5.0, shift=8.0, fps=24.0, blend=LOCAL_BLEND)
    nodes.append(note(
        "FateZero on Wan 2.2 TI2V 5B: the grey rabbit turns pink, with a blend mask; 49 frames at 1280x704 (the "
        "5B model's size), 30 steps, CFG 5.", clip_line(nodes), *wan_run(WAN22_TI2V_5B, WAN22_VAE),
        LOCAL_LINE, BLEND_LINE, MORE))
    return Workflow("fatezero_wan22_5b_local_edit", "Wan 2.2 5B local edit with a blend mask: pink rabbit", nodes,
                    groups)


def wan22_a14b_two_expert_edit() -> Workflow:
    target = STYLE_TARGET + RABBIT.source
    nodes, groups = wan_graph(unet=WAN22_T2V_LOW, vae=WAN21_VAE, clip=RABBIT, start=40, nth=2, target=target,
                              cross=0.8, self_=0.8, mapping="refine", reweight="watercolor:4",
                              prefix="fatezero/wan22_a14b_watercolor_rabbit", frames=33, width=832, height=480,
                              steps=20, cfg=3.5, shift=8.0, fps=16.0, high_noise_unet=WAN22_T2V_HIGH, boundary=0.875)
    nodes.append(left_of_the_experts(note(
        "FateZero on Wan 2.2 T2V A14B, two experts: a rabbit cartoon -> watercolor painting; 33 frames at 832x480, "
        "20 steps, CFG 3.5.", clip_line(nodes),
        *wan_run(f"{WAN22_T2V_HIGH} and {WAN22_T2V_LOW}", WAN21_VAE), WAN_STYLE_LINE,
        "- Two experts, one inversion: model = the low-noise expert, model_high_noise = the high-noise one, switch at "
        "expert_boundary 0.875 (T2V; 0.9 for I2V). SplitSigmas at expert_split_step feeds one sampler per expert.",
        EXPERT_HANDOVER_LINE, MORE)))
    return Workflow("fatezero_wan22_a14b_two_expert_edit", "Wan 2.2 A14B two-expert style edit: watercolor rabbit",
                    nodes, groups)


# ComfyUI's Wan 2.2 A14B T2V template with its 4-step LoRAs (issue 34): shift 5, CFG 1, 4 steps, 2 per expert.
FEW_STEPS, FEW_STEP_CFG, FEW_STEP_SHIFT = 4, 1.0, 5.0
FEW_STEP_ITERATIONS = 4  # the pack's defaults.WAN_FEW_STEP_ITERATIONS (docs/wan.md, few steps at CFG 1)


def add_expert_loras(nodes: list[Node], high: str, low: str) -> None:
    """A LoraLoaderModelOnly at strength 1 right after each expert's loader (nodes 32, 33), as
    in the template: before ModelSamplingSD3 and the FateZero nodes, so the inversion and the
    fusion get the same LoRA'd MODEL (the fusion node refuses another one)."""
    by_id = {n.id: n for n in nodes}
    for node_id, loader, shift, lora, which in ((32, 25, 26, high, "high"), (33, 1, 24, low, "low")):
        nodes.append(Node(node_id, "LoraLoaderModelOnly", (0, 0), (360, 82),
                          {"lora_name": lora, "strength_model": 1.0}, {"model": (loader, 0)},
                          title=f"LoRA lightx2v 4 steps ({which}-noise expert)"))
        by_id[shift].links["model"] = (node_id, 0)


def few_step_layout(nodes: list[Node]) -> None:
    """Each expert a column, loader -> LoRA -> shift top down (high-noise left, low-noise right),
    the text encoder and VAE below the high-noise expert, the video below the low-noise one."""
    columns = {X0 - 400: (25, 32, 26, 21, 22), X0 + 20: (1, 33, 24, 2, 3)}
    rows = {25: 80, 32: 200, 26: 320, 21: 430, 22: 570, 1: 80, 33: 200, 24: 320, 2: 430, 3: 1030}
    for x, ids in columns.items():
        for node in nodes:
            if node.id in ids:
                node.pos = (x, rows[node.id])


def wan22_a14b_lightx2v_4step_edit() -> Workflow:
    """The two-expert style edit as ComfyUI's A14B T2V template runs Wan: fp8 experts, each with
    its lightx2v 4-step LoRA, shift 5, CFG 1, euler, 4 steps split 2 + 2, and the inversion with
    the few-step fixed-point iterations."""
    target = STYLE_TARGET + RABBIT.source
    nodes, groups = wan_graph(unet=WAN22_T2V_LOW, vae=WAN21_VAE, clip=RABBIT, start=40, nth=2, target=target,
                              cross=0.8, self_=0.8, mapping="refine", reweight="watercolor:4",
                              prefix="fatezero/wan22_a14b_lightx2v_watercolor_rabbit", frames=33, width=832,
                              height=480, steps=FEW_STEPS, cfg=FEW_STEP_CFG, shift=FEW_STEP_SHIFT, fps=16.0,
                              high_noise_unet=WAN22_T2V_HIGH, boundary=0.875, iterations=FEW_STEP_ITERATIONS)
    add_expert_loras(nodes, WAN22_T2V_LIGHTX2V_HIGH, WAN22_T2V_LIGHTX2V_LOW)
    few_step_layout(nodes)
    nodes.append(left_of_the_experts(note(
        "FateZero on Wan 2.2 T2V A14B with the lightx2v 4-step LoRAs, as ComfyUI's A14B template: a rabbit cartoon "
        "-> watercolor painting; 33 frames at 832x480, 4 steps, CFG 1, shift 5.", clip_line(nodes),
        *wan_run(f"{WAN22_T2V_HIGH} and {WAN22_T2V_LOW}", WAN21_VAE),
        f"- LoRAs (loras): {WAN22_T2V_LIGHTX2V_HIGH} and the low_noise one, strength 1, each right after its "
        "expert's loader, so the inversion and the edit run the same LoRA'd model.",
        "- 4 steps split 2 + 2 at expert_split_step; fixed_point_iterations 4 (1 leaves a 6x larger reconstruction "
        "error at 4 steps, docs/wan.md). Tested on random weights only: quality unmeasured. Style: as the 20-step "
        "graph, cross/self 0.8, reweight watercolor:4.", EXPERT_HANDOVER_LINE, MORE)))
    return Workflow("fatezero_wan22_a14b_lightx2v_4step_edit",
                    "Wan 2.2 A14B 4-step lightx2v style edit at CFG 1: watercolor rabbit", nodes, groups)


WAN_WORKFLOWS = (wan21_style_edit, wan22_5b_local_edit, wan22_a14b_two_expert_edit, wan22_a14b_lightx2v_4step_edit)
