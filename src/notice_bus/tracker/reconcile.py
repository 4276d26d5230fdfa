"""The tracker's batch store: a batch's rows stored, and ``tracker_sent`` kept up to date.

Each sent notice version carries when it was first received and recorded, whether it was
rejected, whether a newer version superseded it, when the notice first reached the country and
when the bureau first answered it. Acknowledgements can arrive before the notice they answer
(the tracker reads many topics), so both sides update: a version is stored with what the
acknowledgements and answers already stored say of it, and a batch's acknowledgements and
answers update the versions stored before them. Every update keeps the earliest time, so order,
replays and duplicates do not matter, and writes a row only when a value changes.

The batch goes first into temporary stage tables (COPY on PostgreSQL), and everything after is
set-based SQL from them: per-row parameters, on the way in and out of Python, were most of the
tracker's time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.engine import Connection

from notice_bus.runtime.db import fill_stage, stage_of
from notice_bus.tracker.tables import ACK, RESPONSE, SENT

Row = tuple[Any, ...]
SENT_COLUMNS = (
    "country", "notice_id", "version", "action", "published_at", "broker_at", "partition", "offset",
)  # fmt: skip
ACK_COLUMNS = (
    "country", "notice_id", "version", "status", "position", "at", "broker_at", "adapter_id",
    "reason",
)  # fmt: skip
RESPONSE_COLUMNS = ("country", "notice_id", "answer", "text", "responder", "at", "broker_at")

_STAGES = {
    "notices": stage_of(SENT, SENT_COLUMNS),
    "acks": stage_of(ACK, ACK_COLUMNS),
    "responses": stage_of(RESPONSE, RESPONSE_COLUMNS),
}


def _q(names: Sequence[str], alias: str = "") -> str:
    return ", ".join(f'{alias}"{n}"' for n in names)


def _copy_all(table: str, columns: Sequence[str]) -> TextClause:
    """INSERT the stage's rows not stored yet (``WHERE true``: SQLite's parser needs it)."""
    cols = _q(columns)
    return text(
        f"INSERT INTO {table} ({cols}) SELECT {cols} FROM nb_{table}_stage WHERE true"
        " ON CONFLICT DO NOTHING"
    )


_INSERT_ACKS = _copy_all(ACK.name, ACK_COLUMNS)
_INSERT_RESPONSES = _copy_all(RESPONSE.name, RESPONSE_COLUMNS)


_KEY = "{a}.country = {b}.country AND {a}.notice_id = {b}.notice_id"
_VERSION = _KEY + " AND {a}.version = {b}.version"
_ACKED = "(SELECT min(a.broker_at) FROM tracker_ack a WHERE {} AND a.status = '{}')"
_STORED_FIRST = f"(SELECT min(o.broker_at) FROM tracker_sent o WHERE {_KEY.format(a='o', b='s')})"


def _earlier(stored: str, new: str) -> str:
    """The earlier of two times, either of which may be NULL (SQLite has no least())."""
    return f"CASE WHEN {stored} IS NULL OR {new} < {stored} THEN {new} ELSE {stored} END"


# New versions, with what is already known of them: acks and answers stored before (this
# batch's included: they go in first), and the other versions of the same notice, stored or
# in this batch (``g``).
_NEW_VERSIONS = text(f"""
INSERT INTO tracker_sent ({_q(SENT_COLUMNS)}, received_at, recorded_at, rejected, superseded,
                          first_at, answered_at)
SELECT {_q(SENT_COLUMNS, "s.")},
    {_ACKED.format(_VERSION.format(a="a", b="s"), "RECEIVED")},
    {_ACKED.format(_VERSION.format(a="a", b="s"), "RECORDED")},
    EXISTS (SELECT 1 FROM tracker_ack a WHERE {_VERSION.format(a="a", b="s")}
            AND a.status = 'REJECTED'),
    s.version < g.top OR EXISTS (SELECT 1 FROM tracker_sent o WHERE {_KEY.format(a="o", b="s")}
                                 AND o.version > s.version),
    CASE WHEN {_STORED_FIRST} < g.earliest THEN {_STORED_FIRST} ELSE g.earliest END,
    (SELECT min(r.broker_at) FROM tracker_response r WHERE {_KEY.format(a="r", b="s")})
FROM nb_tracker_sent_stage s JOIN (
    SELECT country, notice_id, max(version) AS top, min(broker_at) AS earliest
    FROM nb_tracker_sent_stage GROUP BY country, notice_id
) g ON {_KEY.format(a="g", b="s")}
WHERE true
ON CONFLICT DO NOTHING
""")

# The versions stored before this batch: newer versions and earlier arrivals in it.
_OLDER_VERSIONS = text(f"""
UPDATE tracker_sent SET
    superseded = superseded OR version < g.top,
    first_at = {_earlier("first_at", "g.earliest")}
FROM (
    SELECT country, notice_id, max(version) AS top, min(broker_at) AS earliest
    FROM nb_tracker_sent_stage GROUP BY country, notice_id
) g
WHERE {_KEY.format(a="tracker_sent", b="g")}
  AND (version < g.top AND NOT superseded OR first_at IS NULL OR g.earliest < first_at)
""")

# This batch's acknowledgements, on the versions stored before it.
_ACKS = text(f"""
UPDATE tracker_sent SET
    received_at = {_earlier("received_at", "a.received")},
    recorded_at = {_earlier("recorded_at", "a.recorded")},
    rejected = rejected OR a.refused
FROM (
    SELECT country, notice_id, version,
        min(CASE WHEN status = 'RECEIVED' THEN broker_at END) AS received,
        min(CASE WHEN status = 'RECORDED' THEN broker_at END) AS recorded,
        max(CASE WHEN status = 'REJECTED' THEN 1 ELSE 0 END) = 1 AS refused
    FROM nb_tracker_ack_stage GROUP BY country, notice_id, version
) a
WHERE {_VERSION.format(a="tracker_sent", b="a")}
  AND (a.received < received_at OR received_at IS NULL AND a.received IS NOT NULL
       OR a.recorded < recorded_at OR recorded_at IS NULL AND a.recorded IS NOT NULL
       OR a.refused AND NOT rejected)
""")

# This batch's answers, on every version of the notices they answer.
_ANSWERS = text(f"""
UPDATE tracker_sent SET answered_at = {_earlier("answered_at", "r.earliest")}
FROM (
    SELECT country, notice_id, min(broker_at) AS earliest
    FROM nb_tracker_response_stage GROUP BY country, notice_id
) r
WHERE {_KEY.format(a="tracker_sent", b="r")} AND (answered_at IS NULL OR r.earliest < answered_at)
""")


def store(
    conn: Connection, *, notices: Sequence[Row] = (), acks: Sequence[Row] = (),
    responses: Sequence[Row] = (),
) -> None:  # fmt: skip
    """Store a batch, in the caller's transaction: ``notices`` rows of ``tracker_sent``
    (:data:`SENT_COLUMNS`), ``acks`` of ``tracker_ack`` (:data:`ACK_COLUMNS`) and
    ``responses`` of ``tracker_response`` (:data:`RESPONSE_COLUMNS`), each row a tuple in
    that column order. Rows already stored are left as they are."""
    batch = {"notices": notices, "acks": acks, "responses": responses}
    for kind, rows in batch.items():
        if rows:
            fill_stage(conn, _STAGES[kind], rows)
    # Acks and answers go in first, so that the versions new in this batch find them; the
    # updates run before those versions go in, so that they touch only older rows.
    if acks:
        conn.execute(_INSERT_ACKS)
        conn.execute(_ACKS)
    if responses:
        conn.execute(_INSERT_RESPONSES)
        conn.execute(_ANSWERS)
    if notices:
        conn.execute(_OLDER_VERSIONS)
        conn.execute(_NEW_VERSIONS)
    if conn.dialect.name != "postgresql":  # PostgreSQL empties the stages at commit
        for kind, rows in batch.items():
            if rows:
                conn.execute(_STAGES[kind].delete())
