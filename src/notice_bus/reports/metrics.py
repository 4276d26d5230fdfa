"""Prometheus metrics: the tracker's endpoint, and the conventions the adapters' follow too.

The adapter counts what it does as it does it (:class:`~notice_bus.bureau.metrics.AdapterMetrics`,
served by :func:`notice_bus.bureau.workers.run_adapter`). The tracker's figures are the report's
(:class:`ReportCollector`, served by ``notice-bus tracker --metrics-port``): they are computed
from its database when Prometheus scrapes (at most once every few seconds), so the endpoint and
``notice-bus report`` never disagree.

Names follow Prometheus's conventions: cumulative counts are counters ending in ``_total``,
durations are in seconds and say so, and lags are histograms, so that any quantile can be
taken over any set of countries with ``histogram_quantile``. Example alert rules over them are
in ``deploy/prometheus/alerts.yml``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.engine import Connection, Engine

from notice_bus.runtime.db import as_utc, translate_errors
from notice_bus.tracker import measures
from notice_bus.tracker.group_health import Status
from notice_bus.tracker.tables import GROUP_SAMPLE
from notice_bus.wire.manifest import KINDS

#: Upper bounds of the lag histograms' buckets, in seconds: from a healthy adapter's fraction
#: of a second to the 12 hours a bureau has to answer, and a day.
LAG_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 43200, 86400)


@dataclass(frozen=True, slots=True)
class Histogram:
    """One country's lag histogram: cumulative counts per bucket of :data:`LAG_BUCKETS`,
    then the count and the sum of all observations."""

    buckets: tuple[int, ...]
    count: int
    sum: float


def lag_histograms(conn: Connection, rows: Any) -> dict[str, Histogram]:
    """Per country, the histogram of ``rows``, a query of (country, seconds) pairs, counted
    by the database in one scan."""
    sub = rows.subquery()
    country, value = sub.c[0], sub.c[1]
    below = [func.sum(case((value <= b, 1), else_=0)) for b in LAG_BUCKETS]
    query = select(country, func.count(value), func.sum(value), *below)
    out: dict[str, Histogram] = {}
    for cc, n, total, *counts in conn.execute(query.where(value.is_not(None)).group_by(country)):
        out[cc] = Histogram(tuple(int(c or 0) for c in counts), int(n), float(total or 0.0))
    return out


def last_sample_at(conn: Connection) -> datetime | None:
    """When the tracker last sampled the consumer groups (every ``sample_interval_s`` while it
    runs and reaches the broker): its heartbeat. None if it never did."""
    at = conn.execute(select(func.max(GROUP_SAMPLE.c.at))).scalar()
    return None if at is None else as_utc(at)


@dataclass(frozen=True, slots=True)
class TrackerFigures:
    """What the tracker's database says besides the report: the lag histograms and the
    heartbeat."""

    apply: dict[str, Histogram]
    delivery: dict[str, Histogram]
    response: dict[str, Histogram]
    last_sample: datetime | None


def tracker_figures(engine: Engine) -> TrackerFigures:
    """The histograms of every lag ever measured, and the last sample's time."""
    with translate_errors(str(engine.url)), engine.connect() as conn:
        return TrackerFigures(
            apply=lag_histograms(conn, measures.apply_lags(conn, None)),
            delivery=lag_histograms(conn, measures.delivery_lags(conn, None)),
            response=lag_histograms(conn, measures.response_lags(conn, None)),
            last_sample=last_sample_at(conn),
        )


class ReportCollector(Collector):
    """Per-country figures from :func:`notice_bus.reports.report.build_report` and, given
    ``figures`` (e.g. ``lambda: tracker_figures(engine)``), the lag histograms and the
    tracker's heartbeat; both cached for ``ttl_s``.

    The counts and histograms are computed from every event the tracker holds: they only grow,
    except that an answer to a version later superseded leaves the response histogram.
    """

    _COUNTERS = (
        ("sent", "notice_bus_sent", "Notice events sent to the country."),
        ("recorded", "notice_bus_recorded", "Notice events the country RECORDED."),
        ("rejected", "notice_bus_rejected", "Notice events the country REJECTED."),
        ("answered", "notice_bus_answered", "Notices the country answered."),
        (
            "security_events",
            "notice_bus_security_events",
            "Acknowledgements and answers of the country whose MAC failed, not counted.",
        ),
    )
    _GAUGES = (
        ("outstanding", "notice_bus_outstanding", "Notice events neither recorded nor rejected."),
        ("overdue_record", "notice_bus_overdue_record", "Outstanding past the record deadline."),
        ("overdue_answer", "notice_bus_overdue_answer", "Unanswered past the answer deadline."),
        (
            "consumer_lag",
            "notice_bus_consumer_lag_messages",
            "Messages the country's consumer group is behind.",
        ),
        (
            "consumer_time_lag_s",
            "notice_bus_consumer_time_lag_seconds",
            "Age of the oldest notice the country's group has not consumed.",
        ),
        ("clock_skew_s", "notice_bus_clock_skew_seconds", "The bureau's clock minus the broker's."),
    )
    _HISTOGRAMS = (
        ("apply", "notice_bus_apply_lag_seconds", "Publish-to-RECORDED lag of notice events."),
        (
            "delivery",
            "notice_bus_delivery_lag_seconds",
            "Publish-to-RECEIVED lag of notice events.",
        ),
        ("response", "notice_bus_response_lag_seconds", "First-publish-to-answer lag of notices."),
    )

    def __init__(
        self,
        reports: Callable[[], Sequence[Any]],
        ttl_s: float = 5.0,
        *,
        figures: Callable[[], TrackerFigures] | None = None,
    ) -> None:
        self._reports = reports
        self._figures = figures
        self._ttl_s = ttl_s
        self._cached: tuple[float, Sequence[Any], TrackerFigures | None] = (-1e18, (), None)
        self._lock = threading.Lock()

    def _read(self) -> tuple[Sequence[Any], TrackerFigures | None]:
        with self._lock:
            at, reports, figures = self._cached
            if time.monotonic() - at > self._ttl_s:
                reports = self._reports()
                figures = self._figures() if self._figures else None
                self._cached = (time.monotonic(), reports, figures)
        return reports, figures

    def collect(self) -> Iterator[Metric]:
        reports, figures = self._read()
        for attr, name, doc in self._COUNTERS:
            counter = CounterMetricFamily(name, doc, labels=["country"])
            for r in reports:
                counter.add_metric([r.country], float(getattr(r, attr)))
            yield counter
        for attr, name, doc in self._GAUGES:
            family = GaugeMetricFamily(name, doc, labels=["country"])
            for r in reports:
                value = getattr(r, attr)
                if value is not None:  # an absent figure is absent, not NaN
                    family.add_metric([r.country], float(value))
            yield family
        oldest = GaugeMetricFamily(
            "notice_bus_oldest_waiting_seconds",
            "Age of the country's oldest notice event neither recorded nor rejected (0: none).",
            labels=["country"],
        )
        for r in reports:
            oldest.add_metric([r.country], float(r.oldest_outstanding_s or 0.0))
        yield oldest
        status = GaugeMetricFamily(
            "notice_bus_status", "1 for the country's current status.", labels=["country", "status"]
        )
        for r in reports:
            for s in Status:
                status.add_metric([r.country, s.value], 1.0 if r.status is s else 0.0)
        yield status
        yield from _copies(reports)
        if figures is not None:
            yield from _histograms(figures)
            heartbeat = GaugeMetricFamily(
                "notice_bus_tracker_last_sample_timestamp_seconds",
                "When the tracker last sampled the consumer groups (absent: never).",
            )
            if figures.last_sample is not None:
                heartbeat.add_metric([], figures.last_sample.timestamp())
            yield heartbeat


def _copies(reports: Sequence[Any]) -> Iterator[Metric]:
    """The national copies, as each country's latest copy check tells (countries never
    checked are absent): the differences still there by kind (0 for every kind the check
    did not find, so an alert sees a drift end), when the latest check arrived, and when a
    check last found the copy VERIFIED (absent: never)."""
    drift = GaugeMetricFamily(
        "notice_bus_copy_drift",
        "Differences between the country's national copy and HQ's records that its latest"
        " copy check found and the adapter did not mend, by kind.",
        labels=["country", "kind"],
    )
    checked = GaugeMetricFamily(
        "notice_bus_copy_checked_timestamp_seconds",
        "When the country's latest copy check arrived (broker time).",
        labels=["country"],
    )
    verified = GaugeMetricFamily(
        "notice_bus_copy_verified_timestamp_seconds",
        "When a copy check last found the country's national copy VERIFIED (broker time).",
        labels=["country"],
    )
    for r in reports:
        if getattr(r, "copy_status", None) is None:
            continue
        for kind in KINDS:
            drift.add_metric([r.country, kind], float(r.copy_drift.get(kind, 0)))
        if r.copy_checked_at is not None:
            checked.add_metric([r.country], r.copy_checked_at.timestamp())
        if r.copy_verified_at is not None:
            verified.add_metric([r.country], r.copy_verified_at.timestamp())
    yield from (drift, checked, verified)


def _histograms(figures: TrackerFigures) -> Iterator[Metric]:
    for attr, name, doc in ReportCollector._HISTOGRAMS:
        family = HistogramMetricFamily(name, doc, labels=["country"])
        for cc, h in sorted(getattr(figures, attr).items()):
            bounds = [*(_le(b) for b in LAG_BUCKETS), "+Inf"]
            family.add_metric([cc], list(zip(bounds, (*h.buckets, h.count), strict=True)), h.sum)
        yield family


def _le(bound: float) -> str:
    return repr(float(bound))


def tracker_registry(engine: Engine, reports: Callable[[], Sequence[Any]]) -> CollectorRegistry:
    """The tracker's metrics: ``reports`` (e.g. ``lambda: build_report(engine, settings)``)
    and the histograms and heartbeat of ``engine``, the tracker's database."""
    registry = CollectorRegistry()
    registry.register(ReportCollector(reports, figures=lambda: tracker_figures(engine)))
    return registry
