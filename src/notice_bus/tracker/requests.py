"""HQ's own lag: its decisions on the bureaus' requests, stored one row per request in
``tracker_request``, and the figures the report shows of them.

A request's decisions come in order on its country's ``decisions.CC`` topic: HELD when it
waits for a reviewer, then a final one (APPROVED, i.e. published; REFUSED; INVALID); a clean
request gets APPROVED directly. A final decision replaces HELD and is never replaced itself,
so a replayed HELD after it changes nothing. Few records, so a plain upsert: none of the
stage tables of :mod:`notice_bus.tracker.reconcile`.

The lag from request to publication runs from the broker's time of the request's arrival
(``received_at``) to HQ's clock at the publication (``decided_at``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from notice_bus.runtime.db import as_utc, dialect_insert
from notice_bus.tracker.measures import quantiles, seconds
from notice_bus.tracker.reconcile import Row
from notice_bus.tracker.tables import REQUEST
from notice_bus.wire.request import RequestStatus

__all__ = ["REQUEST_COLUMNS", "request_figures", "store_decisions"]

#: The order of a row's values (:func:`notice_bus.tracker.rows.rows_of` makes them).
REQUEST_COLUMNS = (
    "request_id", "country", "notice_id", "status", "received_at", "decided_at", "decided_by",
    "reason", "rules", "broker_at",
)  # fmt: skip
#: What a final decision sets on a HELD request.
_DECIDED = ("status", "decided_at", "decided_by", "reason", "rules")
_HELD = RequestStatus.HELD.value
#: Status → the report's count of it.
_COUNTS = {
    RequestStatus.HELD.value: "requests_waiting",
    RequestStatus.APPROVED.value: "requests_published",
    RequestStatus.REFUSED.value: "requests_refused",
    RequestStatus.INVALID.value: "requests_invalid",
}


def store_decisions(conn: Connection, rows: Sequence[Row]) -> None:
    """Store decisions (rows in :data:`REQUEST_COLUMNS` order, in the order they came), in
    the caller's transaction: a new request is inserted, a HELD one takes a later decision,
    a decided one stays as it is."""
    if not rows:
        return
    insert = dialect_insert(conn)(REQUEST)
    upsert = insert.on_conflict_do_update(
        index_elements=[REQUEST.c.request_id],
        set_={c: insert.excluded[c] for c in _DECIDED},
        where=REQUEST.c.status == _HELD,
    )
    conn.execute(upsert, _fold(rows))


def _fold(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """One row per request, as the batch's decisions leave it: one statement may not touch a
    row twice (PostgreSQL's ON CONFLICT DO UPDATE refuses to)."""
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        new = dict(zip(REQUEST_COLUMNS, row, strict=True))
        kept = latest.setdefault(new["request_id"], new)
        if kept is not new and kept["status"] == _HELD:
            kept.update({c: new[c] for c in _DECIDED})
    return list(latest.values())


def request_figures(
    conn: Connection, now: datetime, since: datetime | None
) -> dict[str, dict[str, Any]]:
    """Per requesting country with any request (received since ``since``, if given): how
    many wait for a reviewer, were published, refused or invalid; the p50 and p95 seconds
    from request to publication (None without any); and the age at ``now`` of the oldest
    waiting request (None without any), and the rules that hold the waiting ones."""
    query = select(
        REQUEST.c.country, REQUEST.c.status, func.count(), func.min(REQUEST.c.received_at)
    ).group_by(REQUEST.c.country, REQUEST.c.status)
    lags = select(REQUEST.c.country, seconds(conn, REQUEST.c.decided_at, REQUEST.c.received_at))
    lags = lags.where(REQUEST.c.status == RequestStatus.APPROVED.value)
    if since:
        query = query.where(REQUEST.c.received_at >= since)
        lags = lags.where(REQUEST.c.received_at >= since)
    out: dict[str, dict[str, Any]] = {}
    for country, status, n, oldest in conn.execute(query):
        figures = out.setdefault(country, _empty())
        if status in _COUNTS:
            figures[_COUNTS[status]] = n
        if status == _HELD and oldest is not None:
            figures["request_oldest_waiting_s"] = (now - as_utc(oldest)).total_seconds()
    held = select(REQUEST.c.country, REQUEST.c.rules).where(REQUEST.c.status == _HELD)
    if since:
        held = held.where(REQUEST.c.received_at >= since)
    for country, rules in conn.execute(held):
        figures = out.setdefault(country, _empty())
        found = set(figures["requests_held_for"]) | {r for r in (rules or "").split(",") if r}
        figures["requests_held_for"] = sorted(found)
    for country, q in quantiles(conn, lags, [50, 95]).items():
        figures = out.setdefault(country, _empty())
        figures["request_p50_s"], figures["request_p95_s"] = q.get(50), q.get(95)
    return out


def _empty() -> dict[str, Any]:
    return {
        **dict.fromkeys(_COUNTS.values(), 0),
        "request_p50_s": None,
        "request_p95_s": None,
        "request_oldest_waiting_s": None,
        "requests_held_for": [],
    }
