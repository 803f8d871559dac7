"""One call under cProfile: where its time goes (not part of the timings), with the pack's own
functions (any file under ``fatezero_attn``) and the shares of a fused sampling's parts."""
from __future__ import annotations

import cProfile
import pstats
from pathlib import Path

# The pack's functions whose shares are reported, by name (re-point them with PACK_MODULES when they move):
SOURCE_ROW = ("attention",)  # SourceRow.attention: the source row's own model calls (cumulative)
FUSION_KERNELS = ("fused_self_attention", "fused_cross_attention")  # cumulative
# the dispatcher's own work (row bookkeeping, index copies; the attention it calls excluded)
DISPATCHER = ("__call__", "rows", "unfused", "keep_source_layer", "model_wrapper", "call_model", "plain_attention",
              "call_info", "gather_frames", "forward")


def profile_call(fn, path: Path, top: int = 15) -> dict:
    """Run ``fn()`` under cProfile, write the stats to ``path``; the top self times, the pack's
    functions by cumulative time, and the shares of the source row, the fusion kernels and the
    dispatcher's own work in the total."""
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    prof.dump_stats(str(path))
    stats = pstats.Stats(prof)
    total = max(stats.total_tt, 1e-9)
    rows = []
    for (file, line, func), (cc, nc, tt, ct, _) in stats.stats.items():
        rows.append({"function": f"{Path(file).name}:{line}({func})" if file != "~" else func,
                     "file": file, "calls": nc, "tottime": tt, "cumtime": ct})
    top_self = sorted(rows, key=lambda r: -r["tottime"])[:top]
    pack_rows = sorted([r for r in rows if "fatezero_attn" in r["file"]], key=lambda r: -r["cumtime"])[:top]
    for r in top_self + pack_rows:
        r["share_of_total"] = r["tottime"] / total
    pack = lambda func: [r for r in rows if "fatezero_attn" in r["file"] and r["function"].endswith(f"({func})")]
    cum = lambda func: sum(r["cumtime"] for r in pack(func))
    own = lambda func: sum(r["tottime"] for r in pack(func))
    shares = {"source_row": sum(cum(f) for f in SOURCE_ROW), "fusion_kernels": sum(cum(f) for f in FUSION_KERNELS),
              "dispatcher_own": sum(own(f) for f in DISPATCHER)}
    return {"file": str(path), "total_seconds": total, "top_self_time": top_self, "pack_cumulative": pack_rows,
            "shares": {k: v / total for k, v in shares.items()}}
