"""The tracker's outcome columns: ``tracker_sent`` kept up to date with what came back.

Each sent notice version carries when it was first received and recorded, whether it was
rejected, whether a newer version superseded it, when the notice first reached the country and
when the bureau first answered it. Acknowledgements can arrive before the notice they answer
(the tracker reads many topics), so both sides update: a batch's acknowledgements update the
versions already known, straight from the batch; the versions new in a batch look up the
acknowledgements stored before them. Every update keeps the earliest time, so order, replays
and duplicates do not matter, and writes a row only when a value changes (a row version per
no-op write was most of the tracker's time).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    func,
    literal,
    literal_column,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Select

from notice_bus.model import AckStatus
from notice_bus.tables import ACK, RESPONSE, SENT

Version = tuple[str, str, int]  # country, notice_id, version
_COLUMNS = {AckStatus.RECEIVED.value: "received_at", AckStatus.RECORDED.value: "recorded_at"}


def reconcile(
    conn: Connection,
    acks: Sequence[Mapping[str, Any]],
    sent: Iterable[Version],
    notices: Iterable[tuple[str, str]],
) -> None:
    """Bring ``tracker_sent`` up to date after a batch stored the acknowledgement rows
    ``acks``, the notice versions ``sent``, and notices or answers of ``notices``."""
    _from_batch(conn, acks)
    _from_stored(conn, list(sent))
    _notices(conn, list(notices))


def _from_batch(conn: Connection, acks: Sequence[Mapping[str, Any]]) -> None:
    earliest: dict[str, dict[Version, datetime]] = {c: {} for c in _COLUMNS.values()}
    refused: set[Version] = set()
    for a in acks:
        key = (a["country"], a["notice_id"], a["version"])
        if a["status"] == AckStatus.REJECTED.value:
            refused.add(key)
            continue
        seen = earliest[_COLUMNS[a["status"]]]
        if key not in seen or a["broker_at"] < seen[key]:
            seen[key] = a["broker_at"]
    for column, times in earliest.items():
        if times:
            _set_earliest(conn, column, times)
    if refused:
        _reject(conn, _among(conn, (SENT.c.country, SENT.c.notice_id, SENT.c.version), [*refused]))


def _set_earliest(conn: Connection, column: str, times: Mapping[Version, datetime]) -> None:
    target = SENT.c[column]
    if conn.dialect.name == "postgresql":  # one statement, the values as arrays
        v = _unnested(
            ("country", "notice_id", "version", "at"),
            (SENT.c.country.type, SENT.c.notice_id.type, SENT.c.version.type, target.type),
            [(*k, t) for k, t in times.items()],
        )
        conn.execute(
            update(SENT)
            .where(_same(SENT, v, versions=True), or_(target.is_(None), target > v.c.at))
            .values({column: v.c.at})
        )
        return
    at = bindparam("k_at", type_=target.type)
    conn.execute(
        update(SENT).where(_is_key(), or_(target.is_(None), target > at)).values({column: at}),
        [_bound(k) | {"k_at": t} for k, t in times.items()],
    )


def _from_stored(conn: Connection, versions: Sequence[Version]) -> None:
    """The versions new in this batch: the acknowledgements that came before them."""
    if not versions:
        return
    key = (ACK.c.country, ACK.c.notice_id, ACK.c.version)
    acked = _among(conn, key, versions)
    for status, column in _COLUMNS.items():
        first = (
            select(*key, func.min(ACK.c.broker_at).label("at"))
            .where(acked, ACK.c.status == status)
            .group_by(*key)
            .subquery()
        )
        conn.execute(
            update(SENT)
            .where(_same(SENT, first, versions=True), SENT.c[column].is_(None))
            .values({column: first.c.at})
        )
    refused = (
        select(*key).where(acked, ACK.c.status == AckStatus.REJECTED.value).distinct().subquery()
    )
    _reject(conn, _same(SENT, refused, versions=True))


def _notices(conn: Connection, notices: Sequence[tuple[str, str]]) -> None:
    """Superseded versions, a notice's first arrival and its first answer."""
    if not notices:
        return
    touched = _among(conn, (SENT.c.country, SENT.c.notice_id), notices)
    other = SENT.alias("other")
    same_notice = and_(other.c.country == SENT.c.country, other.c.notice_id == SENT.c.notice_id)
    newer: Select[Any] = select(literal_column("1")).where(
        same_notice, other.c.version > SENT.c.version
    )
    conn.execute(
        update(SENT).where(touched, ~SENT.c.superseded, newer.exists()).values(superseded=True)
    )
    first_at = select(func.min(other.c.broker_at)).where(same_notice).scalar_subquery()
    conn.execute(
        update(SENT)
        .where(touched, or_(SENT.c.first_at.is_(None), SENT.c.first_at > first_at))
        .values(first_at=first_at)
    )
    rkey = (RESPONSE.c.country, RESPONSE.c.notice_id)
    answered = (
        select(*rkey, func.min(RESPONSE.c.broker_at).label("at"))
        .where(_among(conn, rkey, notices))
        .group_by(*rkey)
        .subquery()
    )
    conn.execute(
        update(SENT)
        .where(_same(SENT, answered, versions=False), SENT.c.answered_at.is_(None))
        .values(answered_at=answered.c.at)
    )


def _reject(conn: Connection, which: ColumnElement[bool]) -> None:
    conn.execute(update(SENT).where(which, ~SENT.c.rejected).values(rejected=True))


def _bound(key: Version) -> dict[str, Any]:
    return {"k_country": key[0], "k_notice_id": key[1], "k_version": key[2]}


def _is_key() -> ColumnElement[bool]:
    """``tracker_sent``'s row is the one of the bound ``k_`` parameters (an executemany)."""
    return and_(
        SENT.c.country == bindparam("k_country"),
        SENT.c.notice_id == bindparam("k_notice_id"),
        SENT.c.version == bindparam("k_version"),
    )


def _same(table: Any, keys: Any, *, versions: bool) -> ColumnElement[bool]:
    """``table``'s row is the one of ``keys``' row: same country and notice (and version)."""
    same = [table.c.country == keys.c.country, table.c.notice_id == keys.c.notice_id]
    if versions:
        same.append(table.c.version == keys.c.version)
    return and_(*same)


def _unnested(names: Sequence[str], types: Sequence[Any], rows: Sequence[tuple[Any, ...]]) -> Any:
    """PostgreSQL: ``rows`` as a table, sent as one array per column. The statement's text
    stays the same whatever the batch (a long IN list or VALUES is rendered anew and parsed
    on each batch), and the plan is an index lookup per row."""
    arrays = [literal([r[i] for r in rows], postgresql.ARRAY(t)) for i, t in enumerate(types)]
    return func.unnest(*arrays).table_valued(*names).render_derived()


def _among(
    conn: Connection, columns: Sequence[Any], keys: Sequence[tuple[Any, ...]]
) -> ColumnElement[bool]:
    """``columns`` are one of ``keys``: unnested arrays on PostgreSQL, an IN list elsewhere."""
    if conn.dialect.name != "postgresql":
        return tuple_(*columns).in_(keys)
    rows = _unnested([c.name for c in columns], [c.type for c in columns], keys)
    return tuple_(*columns).in_(select(*rows.c))
