"""The lag measures, computed by the database where it can.

Every lag runs between two broker timestamps (LogAppendTime): when HQ's notice reached the
country's topic, and when the country's acknowledgement or answer reached its own topic. No
bureau's clock enters a lag; each bureau's clock is compared with the broker's separately, as
its skew.

On PostgreSQL the percentiles are computed in SQL (``percentile_cont``), so a report over
millions of acknowledgements moves a few rows per country; SQLite, which has no such
function, returns the lags and Python computes them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    case,
    cast,
    func,
    literal,
    select,
)
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Select

from notice_bus.tracker.tables import ACK, SECURITY_EVENT, SENT

Quantiles = dict[str, dict[float, float | None]]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (``q`` in 0..100) of sorted ``values``; None if empty."""
    if not values:
        return None
    pos = (len(values) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def seconds(conn: Connection, later: Any, earlier: Any) -> ColumnElement[Any]:
    """``later - earlier`` in seconds, as a float, in the connection's SQL dialect."""
    if conn.dialect.name == "postgresql":
        # extract() is numeric, which the driver hands back as Decimal: no JSON, no float maths.
        return cast(func.extract("epoch", later - earlier), Float)
    return (func.julianday(later) - func.julianday(earlier)) * 86400.0


def quantiles(conn: Connection, rows: Select[Any], qs: Sequence[float]) -> Quantiles:
    """Per-country quantiles (0..100) and the max (under key 100) of ``rows``, a query of
    (country, value) pairs."""
    sub = rows.subquery()
    country, value = sub.c[0], sub.c[1]
    if conn.dialect.name == "postgresql":
        cols = [func.percentile_cont(q / 100).within_group(value.asc()) for q in qs]
        result = conn.execute(select(country, func.max(value), *cols).group_by(country))
        return {c: {100.0: mx, **dict(zip(qs, vals, strict=True))} for c, mx, *vals in result}
    per: dict[str, list[float]] = defaultdict(list)
    for c, v in conn.execute(select(country, value)):
        if v is not None:
            per[c].append(float(v))
    out: Quantiles = {}
    for c, values in per.items():
        values.sort()
        out[c] = {100.0: values[-1], **{q: percentile(values, q) for q in qs}}
    return out


def lag_quantiles(conn: Connection, since: datetime | None) -> tuple[Quantiles, Quantiles]:
    """Apply lag p50, p95 and max, and delivery lag p95, per country. On PostgreSQL in one
    scan of ``tracker_sent``; elsewhere through :func:`quantiles`."""
    if conn.dialect.name != "postgresql":
        return (
            quantiles(conn, apply_lags(conn, since), [50, 95]),
            quantiles(conn, delivery_lags(conn, since), [95]),
        )
    apply = seconds(conn, SENT.c.recorded_at, SENT.c.broker_at)
    delivery = seconds(conn, SENT.c.received_at, SENT.c.broker_at)
    query = select(
        SENT.c.country,
        func.percentile_cont(0.5).within_group(apply.asc()),
        func.percentile_cont(0.95).within_group(apply.asc()),
        func.max(apply),
        func.percentile_cont(0.95).within_group(delivery.asc()),
    ).group_by(SENT.c.country)
    if since:
        query = query.where(SENT.c.broker_at >= since)
    applied: Quantiles = {}
    delivered: Quantiles = {}
    for country, p50, p95, mx, d95 in conn.execute(query):
        if mx is not None:
            applied[country] = {50: p50, 95: p95, 100.0: mx}
        if d95 is not None:
            delivered[country] = {95: d95}
    return applied, delivered


def apply_lags(conn: Connection, since: datetime | None) -> Select[Any]:
    """(country, seconds from the notice's arrival to its RECORDED acknowledgement)."""
    query = select(SENT.c.country, seconds(conn, SENT.c.recorded_at, SENT.c.broker_at)).where(
        SENT.c.recorded_at.is_not(None)
    )
    return query.where(SENT.c.broker_at >= since) if since else query


def delivery_lags(conn: Connection, since: datetime | None) -> Select[Any]:
    """(country, seconds from the notice's arrival to its RECEIVED acknowledgement)."""
    query = select(SENT.c.country, seconds(conn, SENT.c.received_at, SENT.c.broker_at)).where(
        SENT.c.received_at.is_not(None)
    )
    return query.where(SENT.c.broker_at >= since) if since else query


def response_lags(conn: Connection, since: datetime | None) -> Select[Any]:
    """(country, seconds from a notice's first arrival to the bureau's first answer)."""
    query = select(SENT.c.country, seconds(conn, SENT.c.answered_at, SENT.c.first_at)).where(
        SENT.c.answered_at.is_not(None), ~SENT.c.superseded
    )
    return query.where(SENT.c.first_at >= since) if since else query


def clock_skews(conn: Connection, since: datetime) -> Select[Any]:
    """(country, the bureau's clock minus the broker's, per acknowledgement since ``since``)."""
    return select(ACK.c.country, seconds(conn, ACK.c.at, ACK.c.broker_at)).where(
        ACK.c.broker_at >= since
    )


def counts(conn: Connection, since: datetime | None) -> dict[str, dict[str, Any]]:
    """Per country: events sent, RECORDED, REJECTED, notices answered, and when the country
    was last heard of (its latest acknowledgement)."""
    query = select(
        SENT.c.country,
        func.count(),
        func.count(SENT.c.recorded_at),
        func.sum(case((SENT.c.rejected, 1), else_=0)),
        func.count(case((~SENT.c.superseded, SENT.c.answered_at))),
        func.max(SENT.c.received_at),
        func.max(SENT.c.recorded_at),
    ).group_by(SENT.c.country)
    if since:
        query = query.where(SENT.c.broker_at >= since)
    out: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"sent": 0, "recorded": 0, "rejected": 0, "answered": 0, "seen": None}
    )
    for country, sent, recorded, rejected, answered, got, done in conn.execute(query):
        seen = [t for t in (got, done) if t is not None]
        out[country] = {
            "sent": sent,
            "recorded": recorded,
            "rejected": int(rejected or 0),
            "answered": answered,
            "seen": max(seen) if seen else None,
        }
    return out


def outstanding(conn: Connection, since: datetime | None) -> list[Any]:
    """Sent events with neither a RECORDED nor a REJECTED acknowledgement, oldest first:
    rows of (country, notice_id, version, broker_at)."""
    query = (
        select(SENT.c.country, SENT.c.notice_id, SENT.c.version, SENT.c.broker_at)
        .where(SENT.c.recorded_at.is_(None), ~SENT.c.rejected)
        .order_by(SENT.c.broker_at)
    )
    if since:
        query = query.where(SENT.c.broker_at >= since)
    return list(conn.execute(query))


def unanswered(conn: Connection, before: datetime) -> list[Any]:
    """Notices first sent before ``before`` that the country has not answered, and whose
    latest version is not a cancel: rows of (country, notice_id, first_at)."""
    query = select(SENT.c.country, SENT.c.notice_id, SENT.c.first_at).where(
        ~SENT.c.superseded,
        SENT.c.answered_at.is_(None),
        SENT.c.action != "CANCEL",
        SENT.c.first_at < before,
    )
    return list(conn.execute(query))


def overdue_answers(
    conn: Connection, deadline: datetime, per_country: dict[str, datetime]
) -> dict[str, int]:
    """Per country, how many notices are past their answer deadline (first arrival before
    ``deadline``, or the country's own in ``per_country``), unanswered and not cancelled."""
    cutoff: Any = literal(deadline)
    if per_country:
        cutoff = case(
            *((SENT.c.country == cc, literal(t)) for cc, t in per_country.items()),
            else_=literal(deadline),
        )
    query = (
        select(SENT.c.country, func.count())
        .where(
            ~SENT.c.superseded,
            SENT.c.answered_at.is_(None),
            SENT.c.action != "CANCEL",
            SENT.c.first_at < cutoff,
        )
        .group_by(SENT.c.country)
    )
    return {country: n for country, n in conn.execute(query)}


def security_events(conn: Connection, since: datetime | None) -> dict[str, int]:
    """Per country, its acknowledgements and answers whose MAC failed (broker time)."""
    query = select(SECURITY_EVENT.c.country, func.count()).group_by(SECURITY_EVENT.c.country)
    if since:
        query = query.where(SECURITY_EVENT.c.broker_at >= since)
    return {country: n for country, n in conn.execute(query)}
