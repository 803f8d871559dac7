#!/usr/bin/env python
"""FateZero Attention Preview's time (issue 25): 48 frames at 512x288, 50 steps, every word of the
source prompt and the blend mask, with the frames, from a store of that shape.

The preview reads the store's blend-level maps and runs no model, so a synthetic store of the
real shapes (random maps) costs what a real one costs. Run ``python bench/bench_preview.py``
(``make bench-preview``); it prints the median of ``--repeats`` renders for ``max_frames`` 16
(the node's default) and 0 (every frame). The tests' SD1.5-shaped CLIP encodes the prompt.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import harness
from harness import BLEND_WORDS, SOURCE_PROMPT as SOURCE


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--height", type=int, default=288)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)

    torch = harness.start_comfy("cpu", args.threads)
    pack, nodes = harness.load_pack()
    import comfy.sd
    ckpt = harness.checkpoint_path()  # the tests' checkpoint: its CLIP is SD1.5's shape
    clip = comfy.sd.load_checkpoint_guess_config(str(ckpt), output_vae=False, output_clipvision=False)[1]

    st = harness.PackModules(pack).store
    h, w = args.height // 8, args.width // 8
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(args.steps, args.frames, h // 4, w // 4, 77, generator=g) ** 4
    maps = maps / maps.sum(-1, keepdim=True)
    context = clip.encode_from_tokens(clip.tokenize(SOURCE))
    info = st.StoreInfo("synthetic", args.steps, args.frames, (h, w), "middle", 640, True)
    store = st.AttentionStore(info, torch.linspace(0.03, 14.6, args.steps + 1), torch.zeros(1), context, maps)
    images = torch.rand(args.frames, args.height, args.width, 3, generator=g)
    node = nodes.NODE_CLASS_MAPPINGS["FateZeroAttentionPreview"]()

    print(f"FateZero Attention Preview: {args.frames} frames at {args.width}x{args.height}, {args.steps} steps, "
          f"every word of '{SOURCE}' and the blend mask, with frames; torch threads {torch.get_num_threads()}")
    for max_frames in (16, 0):
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            pages = node.render(store, clip, SOURCE, "", -1, 0.3, BLEND_WORDS, images, max_frames)[0]
            times.append(time.perf_counter() - start)
        print(f"  max_frames {max_frames:2d}: {len(pages)} page(s) of {tuple(pages.shape[1:3])}, "
              f"median {statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
