"""What a propagation run measured: seconds per (country, notice), and their quantiles."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field


def quantile(values: Sequence[float], q: float) -> float:
    """The nearest-rank quantile (no interpolation: every figure is a measured latency)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "p50": quantile(values, 0.50),
        "p95": quantile(values, 0.95),
        "p99": quantile(values, 0.99),
        "max": max(values),
        "n": len(values),
    }


@dataclass
class Latencies:
    """Seconds per (country, notice), with the overall and the worst country's summaries;
    ``hq`` (HQ's publish call, which returns once the broker has every country's copy) and
    ``adapter`` (from then to the RECORDED on the broker) are its two parts."""

    by_country: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    hq: list[float] = field(default_factory=list)
    adapter: list[float] = field(default_factory=list)
    #: Per notice, when it was sent (epoch seconds) and its slowest country's latency.
    timeline: list[tuple[float, float]] = field(default_factory=list)

    def pauses(self, over_s: float = 1.0) -> int:
        """How many notices some country waited more than ``over_s`` for."""
        return sum(1 for _, worst in self.timeline if worst > over_s)

    def overall(self) -> dict[str, float]:
        return summary([v for vs in self.by_country.values() for v in vs])

    def worst(self) -> tuple[str, dict[str, float]]:
        cc = max(self.by_country, key=lambda c: quantile(self.by_country[c], 0.99))
        return cc, summary(self.by_country[cc])
