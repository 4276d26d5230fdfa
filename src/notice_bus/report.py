"""The response-lag report: per country, what was sent, what was recorded, how late, and a
status.

Lag runs from the broker's arrival time of the notice on the country's topic to the broker's
arrival time of the country's RECORDED acknowledgement: both on the broker's clock, so a bureau
whose clock is wrong cannot distort it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, exists, func, select
from sqlalchemy.engine import Engine

from notice_bus.db import as_utc, translate_errors
from notice_bus.model import AckStatus, utcnow
from notice_bus.settings import Settings
from notice_bus.tables import ACK, SENT

_SENT: Any = SENT
_ACK: Any = ACK


class Status(StrEnum):
    """Worst first: the order in which the report lists countries."""

    NEVER_CONNECTED = "NEVER_CONNECTED"
    DOWN = "DOWN"
    LAGGING = "LAGGING"
    OK = "OK"


@dataclass(frozen=True, slots=True)
class CountryReport:
    country: str
    sent: int
    recorded: int
    rejected: int
    outstanding: int
    p50_lag_s: float | None
    p95_lag_s: float | None
    max_lag_s: float | None
    oldest_outstanding_s: float | None
    last_seen_s: float | None
    status: Status


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (``q`` in 0..100) of sorted ``values``; None if empty."""
    if not values:
        return None
    pos = (len(values) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def classify(
    *,
    sent: int,
    outstanding: int,
    p95: float | None,
    oldest: float | None,
    last_seen: float | None,
    settings: Settings,
) -> Status:
    if sent == 0:
        return Status.OK  # nothing to do is not a fault
    if last_seen is None:
        return Status.NEVER_CONNECTED
    if outstanding and last_seen > settings.down_after_s:
        return Status.DOWN
    if (p95 or 0) > settings.lag_threshold_s or (oldest or 0) > settings.lag_threshold_s:
        return Status.LAGGING
    return Status.OK


def build_report(
    engine: Engine, settings: Settings, *, clock: Callable[[], datetime] = utcnow
) -> list[CountryReport]:
    now = clock()
    recorded = _ACK.alias("recorded")
    rejected = _ACK.alias("rejected")

    def same(alias: Any, status: AckStatus) -> Any:
        return and_(
            alias.c.country == _SENT.c.country,
            alias.c.notice_id == _SENT.c.notice_id,
            alias.c.version == _SENT.c.version,
            alias.c.status == status.value,
        )

    query = select(
        _SENT.c.country,
        _SENT.c.broker_at,
        recorded.c.broker_at.label("recorded_at"),
        exists().where(same(rejected, AckStatus.REJECTED)).label("rejected"),
    ).outerjoin(recorded, same(recorded, AckStatus.RECORDED))
    seen_query = select(_ACK.c.country, func.max(_ACK.c.broker_at)).group_by(_ACK.c.country)
    with translate_errors(str(engine.url)), engine.connect() as conn:
        rows = conn.execute(query).all()
        last_seen = {c: as_utc(t) for c, t in conn.execute(seen_query).all()}

    per: dict[str, dict[str, Any]] = {}
    for country, sent_at, recorded_at, was_rejected in rows:
        acc = per.setdefault(country, {"sent": 0, "rejected": 0, "lags": [], "waiting": []})
        acc["sent"] += 1
        if recorded_at is not None:
            acc["lags"].append(max(0.0, (as_utc(recorded_at) - as_utc(sent_at)).total_seconds()))
        elif was_rejected:
            acc["rejected"] += 1
        else:
            acc["waiting"].append(as_utc(sent_at))
    for country in last_seen:
        per.setdefault(country, {"sent": 0, "rejected": 0, "lags": [], "waiting": []})

    reports = []
    for country, acc in per.items():
        lags = sorted(acc["lags"])
        waiting = acc["waiting"]
        oldest = (now - min(waiting)).total_seconds() if waiting else None
        seen = last_seen.get(country)
        seen_s = (now - seen).total_seconds() if seen else None
        p95 = percentile(lags, 95)
        reports.append(
            CountryReport(
                country=country,
                sent=acc["sent"],
                recorded=len(lags),
                rejected=acc["rejected"],
                outstanding=len(waiting),
                p50_lag_s=percentile(lags, 50),
                p95_lag_s=p95,
                max_lag_s=lags[-1] if lags else None,
                oldest_outstanding_s=oldest,
                last_seen_s=seen_s,
                status=classify(
                    sent=acc["sent"],
                    outstanding=len(waiting),
                    p95=p95,
                    oldest=oldest,
                    last_seen=seen_s,
                    settings=settings,
                ),
            )
        )
    order = list(Status)
    return sorted(
        reports,
        key=lambda r: (
            order.index(r.status),
            -(r.oldest_outstanding_s or 0),
            -(r.p95_lag_s or 0),
            r.country,
        ),
    )


def to_json(reports: Sequence[CountryReport]) -> str:
    def plain(r: CountryReport) -> dict[str, Any]:
        d = asdict(r)
        for k, v in d.items():
            if isinstance(v, float):
                d[k] = round(v, 3)
        d["status"] = r.status.value
        return d

    return json.dumps([plain(r) for r in reports], indent=2)


def to_table(reports: Sequence[CountryReport]) -> str:
    head = (
        "COUNTRY",
        "SENT",
        "RECORDED",
        "REJECTED",
        "OUTSTANDING",
        "P50 LAG",
        "P95 LAG",
        "MAX LAG",
        "OLDEST OUTSTANDING",
        "STATUS",
    )
    body = [
        (
            r.country,
            str(r.sent),
            str(r.recorded),
            str(r.rejected),
            str(r.outstanding),
            _dur(r.p50_lag_s),
            _dur(r.p95_lag_s),
            _dur(r.max_lag_s),
            _dur(r.oldest_outstanding_s),
            r.status.value,
        )
        for r in reports
    ]
    if not body:
        return "no notices tracked yet"
    widths = [max(len(row[i]) for row in (head, *body)) for i in range(len(head))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in (head, *body)
    ]
    return "\n".join(lines)


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
