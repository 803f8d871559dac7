"""Train the toy world's Wan (``model.py``) by flow matching on the world's clips (``world.py``).

Seeded and resumable: clip seeds, noise and caption dropout follow the step number, and a
checkpoint (weights, EMA, optimizer, step) is written every ``--save-every`` steps to
``toyworld/runs/`` (not committed). ``--export`` writes the EMA weights as an fp16 diffusion-model
file ComfyUI's UNETLoader detects as Wan 2.1 T2V, the tokenizer model, and a manifest with their
SHA-256, the steps and the commit, to ``toyworld/weights/``.

    .host/venv/bin/python -m toyworld.train --steps 20000            # train (resumes when a checkpoint exists)
    .host/venv/bin/python -m toyworld.train --steps 20000 --export   # then export
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import time
from pathlib import Path

import torch

from . import model as tw

RUNS = tw.HERE / "runs"
WEIGHTS = tw.HERE / "weights"
MODEL_FILE, TOKENIZER_FILE, MANIFEST = "toy_wan_t2v.safetensors", "toy_umt5_spiece.model", "manifest.json"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(tw.REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def setup(seed: int):
    tw.import_comfy()
    spiece = tw.tokenizer_model()
    clip = tw.text_encoder(spiece)
    texts = tw.captions()
    contexts = tw.caption_contexts(clip, texts + [""])  # the last: the empty caption (dropout)
    net = tw.diffusion_model(seed)
    return spiece, texts, contexts, net


def train(args) -> None:
    torch.set_num_threads(args.threads)
    spiece, texts, contexts, net = setup(args.seed)
    index = {t: i for i, t in enumerate(texts)}
    ema = {k: v.detach().clone() for k, v in net.state_dict().items()}
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.0)
    step = 0
    ckpt = RUNS / f"{args.name}.pt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        net.load_state_dict(state["model"])
        ema, step = state["ema"], state["step"]
        opt.load_state_dict(state["opt"])
        print(f"resumed at step {step}")
    opts = {"optimized_attention_override": tw.padded_cross_attention}
    losses, t0 = [], time.time()
    while step < args.steps:
        g = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        seeds = [step * args.batch + i for i in range(args.batch)]
        x0, clips = tw.batch(seeds)
        rows = torch.tensor([index[c.caption] for c in clips])
        rows[torch.rand(args.batch, generator=g) < args.dropout] = len(texts)  # the empty caption
        x, timestep, target = tw.flow_batch(x0, g)
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / args.warmup)
        out = net(x, timestep, tw.with_padding_row(contexts[rows]), transformer_options=opts)
        loss = torch.nn.functional.mse_loss(out.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for k, v in net.state_dict().items():
                ema[k].lerp_(v, 1 - args.ema) if v.is_floating_point() else ema[k].copy_(v)
        step += 1
        losses.append(float(loss))
        if step % args.log_every == 0:
            print(f"step {step} loss {sum(losses) / len(losses):.4f} ({(time.time() - t0) / len(losses):.2f} s/step)",
                  flush=True)
            losses, t0 = [], time.time()
        if step % args.save_every == 0 or step == args.steps:
            RUNS.mkdir(exist_ok=True)
            tmp = ckpt.with_suffix(".partial")
            torch.save({"model": net.state_dict(), "ema": ema, "opt": opt.state_dict(), "step": step}, tmp)
            tmp.replace(ckpt)
    if args.export:
        export(args, spiece, ema, step)


def export(args, spiece: bytes, ema: dict, step: int) -> None:
    from safetensors.torch import save_file
    WEIGHTS.mkdir(exist_ok=True)
    state = {k: v.to(torch.float16).contiguous() for k, v in ema.items()}
    save_file(state, str(WEIGHTS / MODEL_FILE), metadata={"fatezero_toy_world": f"toyworld/train.py, {step} steps"})
    (WEIGHTS / TOKENIZER_FILE).write_bytes(spiece)
    manifest = {"model": MODEL_FILE, "tokenizer": TOKENIZER_FILE, "steps": step, "seed": args.seed,
                "batch": args.batch, "lr": args.lr, "commit": commit(),
                "command": f"python -m toyworld.train --name {args.name} --steps {step} --export",
                "sha256": {MODEL_FILE: sha256(WEIGHTS / MODEL_FILE), TOKENIZER_FILE: sha256(WEIGHTS / TOKENIZER_FILE)}}
    (WEIGHTS / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"exported {WEIGHTS / MODEL_FILE} at step {step}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="toy_wan")
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--dropout", type=float, default=0.1, help="caption dropout (for CFG)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--export", action="store_true")
    train(p.parse_args())


if __name__ == "__main__":
    main()
