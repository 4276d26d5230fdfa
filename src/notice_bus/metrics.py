"""Prometheus metrics: an endpoint on the tracker and on each adapter.

The adapter counts what it does as it does it. The tracker's figures are the report's: they
are computed when Prometheus scrapes (at most once every few seconds), so the endpoint and
``notice-bus report`` never disagree.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from notice_bus.group_health import Status


class AdapterMetrics:
    """What one adapter process did, per country."""

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


class ReportCollector(Collector):
    """Per-country gauges from :func:`notice_bus.report.build_report`, cached for ``ttl_s``."""

    _FIGURES = (
        ("sent", "notice_bus_sent", "Notice events sent to the country."),
        ("recorded", "notice_bus_recorded", "Notice events the country RECORDED."),
        ("rejected", "notice_bus_rejected", "Notice events the country REJECTED."),
        ("outstanding", "notice_bus_outstanding", "Notice events neither recorded nor rejected."),
        ("overdue_record", "notice_bus_overdue_record", "Outstanding past the record deadline."),
        ("overdue_answer", "notice_bus_overdue_answer", "Unanswered past the answer deadline."),
        ("p95_lag_s", "notice_bus_apply_lag_p95_seconds", "p95 publish-to-recorded lag."),
        ("delivery_p95_s", "notice_bus_delivery_lag_p95_seconds", "p95 publish-to-received lag."),
        ("response_p95_s", "notice_bus_response_lag_p95_seconds", "p95 publish-to-answer lag."),
        ("consumer_lag", "notice_bus_consumer_lag", "Offsets the country's group is behind."),
        (
            "consumer_time_lag_s",
            "notice_bus_consumer_time_lag_seconds",
            "Age of the oldest notice the country's group has not consumed.",
        ),
        ("clock_skew_s", "notice_bus_clock_skew_seconds", "The bureau's clock minus the broker's."),
    )

    def __init__(self, reports: Callable[[], Sequence[Any]], ttl_s: float = 5.0) -> None:
        self._reports = reports
        self._ttl_s = ttl_s
        self._cached: tuple[float, Sequence[Any]] = (0.0, ())
        self._lock = threading.Lock()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            at, reports = self._cached
            if time.monotonic() - at > self._ttl_s:
                reports = self._reports()
                self._cached = (time.monotonic(), reports)
        for attr, name, doc in self._FIGURES:
            family = GaugeMetricFamily(name, doc, labels=["country"])
            for r in reports:
                value = getattr(r, attr)
                if value is not None:  # an absent figure is absent, not NaN
                    family.add_metric([r.country], float(value))
            yield family
        status = GaugeMetricFamily(
            "notice_bus_status", "1 for the country's current status.", labels=["country", "status"]
        )
        for r in reports:
            for s in Status:
                status.add_metric([r.country, s.value], 1.0 if r.status is s else 0.0)
        yield status


def serve(registry: CollectorRegistry, port: int, addr: str = "127.0.0.1") -> Any:
    """Serve ``/metrics`` in a background thread; returns the server (``shutdown()`` stops it)."""
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return server
