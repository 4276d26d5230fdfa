"""HQ's append-only, hash-chained audit trail: every request from a bureau, every screening
finding, every decision (who, when, why) and every publication.

Each entry's ``hash`` is SHA-256 over its own fields and ``prev_hash``, the hash of the entry
before it (:data:`GENESIS` for the first), and ``seq`` counts from 1 without gaps. So an edit,
removal or reordering of any entry makes :func:`verify` fail from that entry on.

What it does not prove: someone who can rewrite the whole table can recompute every hash
after their change and forge a chain that verifies; removing the latest entries leaves a
shorter chain that verifies too. Against both, anchor the chain outside this database: note
the latest seq and hash (:func:`latest`, ``ChainCheck.last_hash``; ``audit verify`` prints
them) where the database's administrators cannot rewrite it, and check later that the entry
of that seq still has that hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, Text, cast, insert, select, text
from sqlalchemy.engine import Connection, Row
from sqlalchemy.sql.elements import ColumnElement

from notice_bus.hq.tables import HQ_AUDIT
from notice_bus.runtime.db import as_utc, translate_errors


class Kind(StrEnum):
    REQUEST = "REQUEST"
    FINDING = "FINDING"
    DECISION = "DECISION"
    PUBLICATION = "PUBLICATION"


GENESIS = "0" * 64
# Any fixed number ("hq_audit" in ASCII): the advisory lock appends take turns on.
_APPEND_LOCK = 0x68715F6175646974
_PAGE = 1000  # entries read at a time by verify


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    at: datetime
    kind: str
    actor: str
    request_id: str | None
    notice_id: str | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class ChainCheck:
    entries: int
    ok: bool
    broken_at: int | None  # seq of the first entry that does not verify
    problem: str  # "" when ok
    # The hash of the last entry that verified (GENESIS if none): the value to note elsewhere.
    last_hash: str = GENESIS


def entry_hash(
    prev_hash: str,
    seq: int,
    at: datetime,
    kind: str,
    actor: str,
    request_id: str | None,
    notice_id: str | None,
    detail: Mapping[str, Any],
) -> str:
    """SHA-256 hex of the canonical JSON of the fields; ``at`` in UTC to the microsecond
    (naive means UTC: SQLite hands times back naive)."""
    stamp = as_utc(at).isoformat(timespec="microseconds")
    fields = [prev_hash, seq, stamp, str(kind), actor, request_id, notice_id, dict(detail)]
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _check_json(value: Any, path: str) -> None:
    # Floats are refused: 1.0 may come back as 1 (or lose digits) and change the hash.
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"detail{path}: not valid Unicode text") from exc
    elif value is None or isinstance(value, bool | int):
        return
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"detail{path}: key {key!r} is not a string")
            _check_json(key, path)
            _check_json(item, f"{path}[{key!r}]")
    else:
        raise TypeError(
            f"detail{path}: {type(value).__name__} is not allowed"
            " (only str, int, bool, None, list and dict)"
        )


def append(
    conn: Connection,
    *,
    kind: Kind,
    actor: str,
    at: datetime,
    detail: Mapping[str, Any],
    request_id: str | None = None,
    notice_id: str | None = None,
) -> Entry:
    """Append one entry inside the caller's transaction (``conn`` from
    :func:`notice_bus.runtime.db.transaction`), so it commits or rolls back with what it
    records. Raises TypeError for a detail value that is not str/int/bool/None/list/dict."""
    kind = Kind(kind)
    if not isinstance(detail, Mapping):
        raise TypeError("detail must be a mapping")
    _check_json(dict(detail), "")
    for name, value, longest in (
        ("actor", actor, 100),
        ("request_id", request_id, 64),
        ("notice_id", notice_id, 16),
    ):
        if value is not None and not 0 < len(value) <= longest:
            raise ValueError(f"{name} must be 1 to {longest} characters")
    # A copy the caller cannot change after it was hashed.
    body: dict[str, Any] = json.loads(json.dumps(dict(detail)))
    at = as_utc(at)  # SQLite keeps no offset: store UTC

    # Appends take turns, and the last entry is read only once our turn has come, so two
    # appends never chain to the same entry. PostgreSQL: a lock held until our transaction
    # ends (commit makes the entry visible first; READ COMMITTED, the default, lets the next
    # holder's read see it). SQLite: a write takes the database's single writer lock until
    # the transaction ends, but the driver starts the transaction only at the first write,
    # and a read before it could see a chain another writer is about to extend. So write
    # first, a no-op, to hold the lock before reading.
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _APPEND_LOCK})
    else:
        conn.execute(text("UPDATE hq_audit SET seq = seq WHERE 0 = 1"))
    c = HQ_AUDIT.c
    last = conn.execute(select(c.seq, c.hash).order_by(c.seq.desc()).limit(1)).first()
    seq, prev_hash = (last.seq + 1, last.hash) if last is not None else (1, GENESIS)

    digest = entry_hash(prev_hash, seq, at, kind, actor, request_id, notice_id, body)
    entry = Entry(seq, at, str(kind), actor, request_id, notice_id, body, prev_hash, digest)
    conn.execute(insert(HQ_AUDIT).values(asdict(entry)))  # fields named as the columns
    return entry


def _columns() -> list[Any]:
    c = HQ_AUDIT.c
    # The detail as stored text, decoded here: a tampered, undecodable one is reported, not
    # raised from the driver halfway through a page.
    raw = cast(c.detail, Text).label("detail")
    return [c.seq, c.at, c.kind, c.actor, c.request_id, c.notice_id, raw, c.prev_hash, c.hash]


def _entry(row: Row[Any]) -> Entry:
    detail = json.loads(row.detail)
    if not isinstance(detail, dict):
        raise ValueError("detail is not a JSON object")
    return Entry(
        row.seq,
        as_utc(row.at),
        row.kind,
        row.actor,
        row.request_id,
        row.notice_id,
        detail,
        row.prev_hash,
        row.hash,
    )


def _select(engine: Engine, where: ColumnElement[bool]) -> list[Entry]:
    with translate_errors(str(engine.url)), engine.connect() as conn:
        rows: Sequence[Row[Any]] = conn.execute(
            select(*_columns()).where(where).order_by(HQ_AUDIT.c.seq)
        ).all()
    return [_entry(row) for row in rows]


def story(engine: Engine, notice_id: str) -> list[Entry]:
    """Every entry about ``notice_id``, in order."""
    return _select(engine, HQ_AUDIT.c.notice_id == notice_id)


def entries_of_request(engine: Engine, request_id: str) -> list[Entry]:
    """Every entry about the request ``request_id``, in order."""
    return _select(engine, HQ_AUDIT.c.request_id == request_id)


def latest(engine: Engine) -> Entry | None:
    """The last entry (None when there is none): its seq and hash are what to note elsewhere."""
    with translate_errors(str(engine.url)), engine.connect() as conn:
        row = conn.execute(select(*_columns()).order_by(HQ_AUDIT.c.seq.desc()).limit(1)).first()
    return None if row is None else _entry(row)


def verify(engine: Engine) -> ChainCheck:
    """Check the chain in seq order: seq continuous from 1, every prev_hash the previous
    entry's hash, every hash its entry's. Reads a page at a time (by seq, so entries appended
    meanwhile are checked too)."""
    expected, prev, count = 1, GENESIS, 0

    def broken(seq: int, problem: str) -> ChainCheck:
        return ChainCheck(count, False, seq, f"entry {seq}: {problem}", prev)

    c = HQ_AUDIT.c
    with translate_errors(str(engine.url)), engine.connect() as conn:
        while True:
            query = select(*_columns()).order_by(c.seq).limit(_PAGE)
            if expected > 1:  # the first page has no bound, so an entry 0 (or less) is seen
                query = query.where(c.seq >= expected)
            page = conn.execute(query).all()
            conn.rollback()  # no snapshot or lock held between pages
            for row in page:
                if row.seq < expected:
                    return broken(row.seq, "comes before entry 1 (inserted?)")
                if row.seq > expected:
                    gone = f"entry {expected}"
                    if row.seq > expected + 1:
                        gone = f"entries {expected} to {row.seq - 1}"
                    after = f"follows entry {expected - 1}" if expected > 1 else "comes first"
                    return broken(row.seq, f"{after} ({gone} removed?)")
                if row.prev_hash != prev:
                    before = "the genesis hash" if row.seq == 1 else f"entry {row.seq - 1}'s hash"
                    return broken(row.seq, f"prev_hash is not {before}")
                try:
                    entry = _entry(row)
                except (TypeError, ValueError):
                    return broken(row.seq, "its detail is not a JSON object (edited?)")
                digest = entry_hash(
                    entry.prev_hash,
                    entry.seq,
                    entry.at,
                    entry.kind,
                    entry.actor,
                    entry.request_id,
                    entry.notice_id,
                    entry.detail,
                )
                if digest != entry.hash:
                    return broken(row.seq, "its hash does not match its content (edited?)")
                expected, prev, count = expected + 1, entry.hash, count + 1
            if len(page) < _PAGE:
                return ChainCheck(count, True, None, "", prev)
