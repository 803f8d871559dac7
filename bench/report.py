"""The benches' reporting helpers: byte counts, plain-text tables, medians over repeats, ratios
paired per repeat, least-squares lines."""
from __future__ import annotations

import statistics

MB = 1024 ** 2
GB = 1024 ** 3
TB = 1024 ** 4


def fmt_bytes(n: float | None, tb: bool = False) -> str:
    """``1.5 GB``, ``320 MB``; ``tb``: terabytes from 1 TB up (the Wan estimate)."""
    if n is None:
        return "-"
    if tb and abs(n) >= TB:
        return f"{n / TB:.3g} TB"
    for unit, div in (("GB", GB), ("MB", MB), ("KB", 1024)):
        if abs(n) >= div:
            return f"{n / div:.3g} {unit}" if n / div < 100 else f"{n / div:.0f} {unit}"
    return f"{n:.0f} B"


def table(rows: list[list], header: list[str]) -> str:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in cells[1:]])


def median_phase(runs: list[dict]) -> dict:
    """Median of every numeric field over repeats (the list of runs is kept alongside)."""
    out = {}
    for key in runs[0]:
        vals = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
        out[key] = statistics.median(vals) if vals else runs[0][key]
    return out


def phase_medians(runs: dict[str, list[dict]]) -> tuple[dict, dict]:
    """``(medians, report)``: each phase's median, and ``{phase: {"median", "runs"}}`` for the JSON."""
    phases = {k: median_phase(v) for k, v in runs.items()}
    return phases, {k: {"median": phases[k], "runs": v} for k, v in runs.items()}


def paired_ratio(runs: dict[str, list[dict]], key: str, base: str) -> float:
    """Median of the per-repeat wall-time ratios of phase ``key`` to phase ``base``."""
    return statistics.median(a["seconds"] / b["seconds"] for a, b in zip(runs[key], runs[base]))


def linear_fit(xs: list[float], ys: list[float]) -> dict:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    icpt = my - slope * mx
    ss_res = sum((y - (icpt + slope * x)) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - my) ** 2 for y in ys)
    return {"slope": slope, "intercept": icpt, "r2": 1 - ss_res / ss_tot if ss_tot else 1.0,
            "max_rel_residual": max(abs(y - (icpt + slope * x)) / max(abs(y), 1) for x, y in zip(xs, ys))}
