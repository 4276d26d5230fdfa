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

from sqlalchemy import ColumnElement, and_, func, literal_column, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Select

from notice_bus.model import AckStatus
from notice_bus.tables import ACK, RESPONSE, SENT

Quantiles = dict[str, dict[float, float | None]]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (``q`` in 0..100) of sorted ``values``; None if empty."""
    if not values:
        return None
    pos = (len(values) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def seconds(conn: Connection, later: Any, earlier: Any) -> ColumnElement[Any]:
    """``later - earlier`` in seconds, in the connection's SQL dialect."""
    if conn.dialect.name == "postgresql":
        return func.extract("epoch", later - earlier)
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


def _ack_join(status: AckStatus) -> Any:
    ack = ACK.alias(f"ack_{status.value.lower()}")
    cond = and_(
        ack.c.country == SENT.c.country,
        ack.c.notice_id == SENT.c.notice_id,
        ack.c.version == SENT.c.version,
        ack.c.status == status.value,
    )
    return ack, cond


def apply_lags(conn: Connection, since: datetime | None) -> Select[Any]:
    """(country, seconds from the notice's arrival to its RECORDED acknowledgement)."""
    ack, cond = _ack_join(AckStatus.RECORDED)
    query = select(SENT.c.country, seconds(conn, ack.c.broker_at, SENT.c.broker_at)).join(ack, cond)
    return query.where(SENT.c.broker_at >= since) if since else query


def delivery_lags(conn: Connection, since: datetime | None) -> Select[Any]:
    """(country, seconds from the notice's arrival to its RECEIVED acknowledgement)."""
    ack, cond = _ack_join(AckStatus.RECEIVED)
    query = select(SENT.c.country, seconds(conn, ack.c.broker_at, SENT.c.broker_at)).join(ack, cond)
    return query.where(SENT.c.broker_at >= since) if since else query


def response_lags(conn: Connection, since: datetime | None) -> Select[Any]:
    """(country, seconds from a notice's first arrival to the bureau's first answer)."""
    first_sent = (
        select(SENT.c.country, SENT.c.notice_id, func.min(SENT.c.broker_at).label("at"))
        .group_by(SENT.c.country, SENT.c.notice_id)
        .subquery()
    )
    first_answer = (
        select(RESPONSE.c.country, RESPONSE.c.notice_id, func.min(RESPONSE.c.broker_at).label("at"))
        .group_by(RESPONSE.c.country, RESPONSE.c.notice_id)
        .subquery()
    )
    query = select(first_sent.c.country, seconds(conn, first_answer.c.at, first_sent.c.at)).join(
        first_answer,
        and_(
            first_answer.c.country == first_sent.c.country,
            first_answer.c.notice_id == first_sent.c.notice_id,
        ),
    )
    return query.where(first_sent.c.at >= since) if since else query


def clock_skews(conn: Connection, since: datetime | None) -> Select[Any]:
    """(country, the bureau's clock minus the broker's, per acknowledgement)."""
    query = select(ACK.c.country, seconds(conn, ACK.c.at, ACK.c.broker_at))
    return query.where(ACK.c.broker_at >= since) if since else query


def counts(conn: Connection, since: datetime | None) -> dict[str, dict[str, int]]:
    """Per country: events sent, RECORDED, REJECTED, and notices answered."""
    out: dict[str, dict[str, int]] = defaultdict(
        lambda: {"sent": 0, "recorded": 0, "rejected": 0, "answered": 0}
    )
    sent = select(SENT.c.country, func.count()).group_by(SENT.c.country)
    acks = select(ACK.c.country, ACK.c.status, func.count()).where(
        ACK.c.status.in_([AckStatus.RECORDED.value, AckStatus.REJECTED.value])
    )
    answered = select(RESPONSE.c.country, func.count(func.distinct(RESPONSE.c.notice_id)))
    if since:
        sent = sent.where(SENT.c.broker_at >= since)
        acks = acks.where(ACK.c.broker_at >= since)
        answered = answered.where(RESPONSE.c.broker_at >= since)
    for country, n in conn.execute(sent):
        out[country]["sent"] = n
    for country, status, n in conn.execute(acks.group_by(ACK.c.country, ACK.c.status)):
        out[country]["recorded" if status == AckStatus.RECORDED.value else "rejected"] = n
    for country, n in conn.execute(answered.group_by(RESPONSE.c.country)):
        out[country]["answered"] = n
    return out


def outstanding(conn: Connection, since: datetime | None) -> list[Any]:
    """Sent events with neither a RECORDED nor a REJECTED acknowledgement, oldest first:
    rows of (country, notice_id, version, broker_at)."""
    done = ACK.alias("done")
    cond = and_(
        done.c.country == SENT.c.country,
        done.c.notice_id == SENT.c.notice_id,
        done.c.version == SENT.c.version,
        done.c.status.in_([AckStatus.RECORDED.value, AckStatus.REJECTED.value]),
    )
    query = (
        select(SENT.c.country, SENT.c.notice_id, SENT.c.version, SENT.c.broker_at)
        .where(~select(literal_column("1")).where(cond).exists())
        .order_by(SENT.c.broker_at)
    )
    if since:
        query = query.where(SENT.c.broker_at >= since)
    return list(conn.execute(query))


def unanswered(conn: Connection, before: datetime) -> list[Any]:
    """Notices first sent before ``before`` that the country has not answered, and whose
    latest version is not a cancel: rows of (country, notice_id, first broker_at)."""
    answered: Select[Any] = select(literal_column("1")).where(
        and_(RESPONSE.c.country == SENT.c.country, RESPONSE.c.notice_id == SENT.c.notice_id)
    )
    first = (
        select(
            SENT.c.country,
            SENT.c.notice_id,
            func.min(SENT.c.broker_at).label("at"),
            func.max(SENT.c.version).label("v"),
        )
        .where(~answered.exists())
        .group_by(SENT.c.country, SENT.c.notice_id)
        .subquery()
    )
    cancelled: Select[Any] = select(literal_column("1")).where(
        and_(
            SENT.c.country == first.c.country,
            SENT.c.notice_id == first.c.notice_id,
            SENT.c.version == first.c.v,
            SENT.c.action == "CANCEL",
        )
    )
    query = select(first.c.country, first.c.notice_id, first.c.at).where(
        first.c.at < before, ~cancelled.exists()
    )
    return list(conn.execute(query))


def last_seen(conn: Connection) -> dict[str, datetime]:
    query = select(ACK.c.country, func.max(ACK.c.broker_at)).group_by(ACK.c.country)
    return {country: at for country, at in conn.execute(query)}
