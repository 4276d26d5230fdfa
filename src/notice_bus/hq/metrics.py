"""The review service's Prometheus metrics: decisions made, and requests waiting for a
reviewer (read from HQ's database at each scrape, so it counts other processes' decisions)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge

from notice_bus.wire.request import Decision


class ReviewMetrics:
    def __init__(self, waiting: Callable[[], int], registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        self._decisions = Counter(
            "notice_bus_review_decisions",
            "Decisions on bureaus' requests made by this review service (HELD: sent to a"
            " reviewer), by requesting country",
            ["country", "status"],
            registry=self.registry,
        )
        waiting_now = Gauge(
            "notice_bus_review_waiting",
            "Requests held for a reviewer in HQ's database",
            registry=self.registry,
        )
        waiting_now.set_function(lambda: float(waiting()))

    def count(self, decisions: Iterable[Decision]) -> None:
        for d in decisions:
            self._decisions.labels(d.requesting_country, d.status.value).inc()
