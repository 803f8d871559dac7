"""The edit table of a toy-world model (``edits.py``) through the pack's nodes, in one ComfyUI
process: a colour swap on each of ``--clips`` clips not seen in training, fused, without fusion,
re-noised (SDEdit) and fused with the blend mask; the share of edits applied, the trajectory
error and the background PSNR.

    .host/venv/bin/python -m toyworld.measure_edits                  # the committed weights
    .host/venv/bin/python -m toyworld.measure_edits --checkpoint toyworld/runs/toy_wan.pt
    .host/venv/bin/python -m toyworld.measure_edits --steps 4 --source "noised source"
    .host/venv/bin/python -m toyworld.measure_edits --reconstruction 4,8,30 --iterations-list 1,4,10

The model goes through ComfyUI's own UNETLoader from an fp16 file (a checkpoint's EMA weights are
written to a temporary folder first), as a user's Wan file would.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from . import edits
from . import model as tw

EDIT_SEEDS = 30_000_000  # clips not seen in training (training's seeds count up from 0)


def ema_weights(checkpoint: str | None) -> dict[str, torch.Tensor]:
    if checkpoint:
        return torch.load(checkpoint, weights_only=False)["ema"]
    from safetensors.torch import load_file
    from .train import MODEL_FILE, WEIGHTS
    return load_file(str(WEIGHTS / MODEL_FILE))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="a training checkpoint (its EMA weights); default: the committed weights")
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--steps", type=int, default=edits.Setting.steps)
    p.add_argument("--cfg", type=float, default=edits.Setting.cfg)
    p.add_argument("--fraction", type=float, default=edits.Setting.cross, help="cross and self replace fractions")
    p.add_argument("--fused-blocks", default="auto")
    p.add_argument("--iterations", type=int, default=1, help="the inversion's fixed-point iterations")
    p.add_argument("--source", default="inverted", choices=("inverted", "noised source"),
                   help="the fusion node's source_latents")
    p.add_argument("--shift", type=float, help="ModelSamplingSD3's shift (default: the model's own, 8)")
    p.add_argument("--reconstruction", help="steps, e.g. '4,8,30': print the inversion's reconstruction table instead")
    p.add_argument("--iterations-list", default="1,4,10", help="the reconstruction table's fixed-point iterations")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="JSON file for the table")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tw.import_comfy()
    import folder_paths
    import host
    from safetensors.torch import save_file
    _, nodes = host.load_pack_in_process()
    node = lambda name: nodes.NODE_CLASS_MAPPINGS[name]()
    setting = edits.Setting(steps=args.steps, cfg=args.cfg, cross=args.fraction, self_=args.fraction,
                            fused_blocks=args.fused_blocks, iterations=args.iterations, source=args.source)
    ints = lambda text: [int(v) for v in text.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        name = "toy_wan_t2v.safetensors"
        save_file({k: v.to(torch.float16).contiguous() for k, v in ema_weights(args.checkpoint).items()},
                  str(Path(folder) / name))
        folder_paths.add_model_folder_path("diffusion_models", folder)
        model = node("UNETLoader").load_unet(name, "default")[0]
        if args.shift is not None:
            model = node("ModelSamplingSD3").patch(model, args.shift)[0]
        editor = edits.Editor(node, model, tw.text_encoder(tw.tokenizer_model()))
        seeds = list(range(EDIT_SEEDS, EDIT_SEEDS + args.clips))
        shift = "the model's" if args.shift is None else f"{args.shift:g}"
        weights = f"{args.checkpoint or 'committed weights'}, shift {shift}"
        if args.reconstruction:
            table = edits.reconstruction_table(editor, seeds, setting, ints(args.reconstruction),
                                               ints(args.iterations_list))
            print(f"|x_back - x| / |x|, inverted and sampled back at CFG 1 without fusion, {args.clips} clips ({weights})")
            print(edits.fmt_reconstruction(table))
        else:
            table = edits.colour_swaps(editor, seeds, setting, blend=True)
            print(f"colour swaps on {args.clips} clips, {args.steps} steps, CFG {args.cfg:g}, fractions {args.fraction:g}, "
                  f"fused blocks {args.fused_blocks}, source {args.source}, {args.iterations} iteration(s) ({weights})")
            print(edits.fmt(table))
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "table": table}, indent=1) + "\n")


if __name__ == "__main__":
    main()
