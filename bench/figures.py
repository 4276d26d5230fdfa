"""How the propagation benchmarks put their latencies: summaries, lines and spreads."""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from typing import Any

from bench.common import say
from bench.latencies import Latencies, quantile
from bench.propagation import RunResult


def figures(lat: Latencies) -> dict[str, Any]:
    overall = lat.overall()
    worst_cc, worst = lat.worst()
    return {
        "p50_s": round(overall["p50"], 3),
        "p95_s": round(overall["p95"], 3),
        "p99_s": round(overall["p99"], 3),
        "max_s": round(overall["max"], 3),
        "samples": int(overall["n"]),
        "pauses_over_1s": lat.pauses(1.0),
        "worst_country": worst_cc,
        "worst_p99_s": round(worst["p99"], 3),
        "worst_max_s": round(worst["max"], 3),
    }


def show(label: str, lat: Latencies, extra: str = "") -> None:
    f = figures(lat)
    say(
        f"{label:28} p50 {f['p50_s']:6.2f}  p95 {f['p95_s']:6.2f}  p99 {f['p99_s']:6.2f}"
        f"  max {f['max_s']:6.2f} s  over 1 s {f['pauses_over_1s']}"
        f"  worst {f['worst_country']} p99 {f['worst_p99_s']:.2f} s"
        + (f"  {extra}" if extra else "")
    )


def growth_figures(r: RunResult, notices: int) -> dict[str, Any]:
    return {
        **figures(r.latencies),
        "rss_mb": round(r.rss_mb, 1),
        "processes": r.processes,
        "notices": notices,
        "unrecorded": r.missing,
    }


def spread(values: Sequence[float]) -> dict[str, float]:
    """The median and range of one figure over repetitions (or blocks)."""
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "n": len(values),
    }


def spread_text(s: dict[str, float]) -> str:
    return f"{s['median']:.2f} s ({s['min']:.2f}-{s['max']:.2f}, {int(s['n'])})"


def part_p50(values: list[float]) -> float:
    return round(quantile(values, 0.5), 3) if values else float("nan")


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def loads(values: list[float]) -> str:
    return " ".join(f"{x:.1f}" for x in values)
