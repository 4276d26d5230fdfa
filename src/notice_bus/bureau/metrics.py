"""An adapter's Prometheus metrics: what it did per country, as it did it; served by
:func:`notice_bus.bureau.workers.run_adapter` (see :mod:`notice_bus.reports.metrics` for the
conventions)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge


class AdapterMetrics:
    """What one adapter process did, per country. (prometheus_client exposes a Counter
    named ``x`` as ``x_total``.)"""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.records = Counter(
            "notice_bus_adapter_records",
            "Records finished, by outcome (recorded, rejected).",
            ["country", "outcome"],
            registry=self.registry,
        )
        self.errors = Counter(
            "notice_bus_adapter_errors",
            "Batches not finished, by cause.",
            ["country", "cause"],
            registry=self.registry,
        )
        self.holding = Gauge(
            "notice_bus_adapter_holding",
            "1 while a batch waits for the local system.",
            ["country"],
            registry=self.registry,
        )
        self.last_commit = Gauge(
            "notice_bus_adapter_last_commit_timestamp_seconds",
            "When offsets were last committed.",
            ["country"],
            registry=self.registry,
        )

    def finished(self, country: str, recorded: int, rejected: int) -> None:
        self.records.labels(country, "recorded").inc(recorded)
        self.records.labels(country, "rejected").inc(rejected)
        self.last_commit.labels(country).set(time.time())
