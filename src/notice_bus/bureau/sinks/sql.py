"""The default local system: a relational database through SQLModel (PostgreSQL or SQLite)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Text, and_, insert, or_, select, text, update
from sqlalchemy import cast as cast_to

from notice_bus.bureau.sinks.rows import COLUMNS, JSON_COLUMNS, copy_values, row_of
from notice_bus.bureau.sinks.sink import BufferedSink, Health
from notice_bus.bureau.sinks.tables import LOCAL_REMINDER, LOCAL_RESPONSE, LOCAL_TABLES, RED_NOTICE
from notice_bus.errors import NoticeBusError
from notice_bus.runtime.db import (
    as_utc,
    dialect_insert,
    fill_stage,
    make_engine,
    redact,
    stage_of,
    transaction,
    translate_errors,
)
from notice_bus.wire.digest import CONTENT_FIELDS, Entry, content_hash
from notice_bus.wire.model import (
    ACTIVE,
    NOT_ADDRESSED,
    WITHDRAWN,
    Action,
    Answer,
    NoticeEvent,
    Reminder,
    Response,
    utcnow,
)

log = logging.getLogger("notice_bus.adapter")
_TABLE: Any = RED_NOTICE
# A batch this large goes through COPY into a temporary table, then one upsert from it: the
# executemany's per-row parameter handling was most of a bulk load's write time.
_COPY_FROM = 200
_BAD_LOOK_EVERY_S = 60.0  # how often responses() looks for mistyped answers
_STAGE = stage_of(RED_NOTICE)
_CANCEL_COLUMNS = (
    "version",
    "status",
    "withdrawn_reason",
    "event_id",
    "published_at",
    "recorded_at",
)


class SqlSink(BufferedSink):
    """Writes notices into the ``red_notice`` table, one upsert per batch.

    A row changes only when the incoming version is higher than the stored one, and an active
    version never replaces a row withdrawn by a cancel, so replays, duplicates and reordering
    are harmless. A row withdrawn because an update no longer addressed this country (reason
    :data:`~notice_bus.wire.model.NOT_ADDRESSED`) becomes active again with a later version that
    addresses it.

    Officers' answers with an ``answer`` that is not one of
    :class:`~notice_bus.wire.model.Answer` are left in ``notice_response``, unsent, and logged
    once each (they are looked for once a minute): one mistyped row must not stop the rest.

    :meth:`entries` lists the table in one streamed SELECT; :meth:`force` is the repair path
    of a copy check: the ordinary upsert, except that a cancel is applied over a row of the
    same version too (a resurrected notice: a row set back to ACTIVE at the version of HQ's
    cancel, which :meth:`flush` leaves alone as already taken).
    """

    def __init__(self, database_url: str, *, clock: Callable[[], datetime] = utcnow) -> None:
        super().__init__()
        # No ping before each write: a lost connection fails the write, which is retried.
        self.engine = make_engine(database_url, LOCAL_TABLES, ping=False)
        self._clock = clock
        self._told: set[int] = set()  # ids of unreadable answers already logged
        self._next_bad_look = 0.0
        insert = dialect_insert(self.engine)
        self._upserts = _upserts(insert(_TABLE))
        self._forced = _upserts(insert(_TABLE), force=True)
        self._staged: tuple[Any, Any] | None = None
        self._staged_forced: tuple[Any, Any] | None = None
        if self.engine.dialect.name == "postgresql":
            staged = select(*[_STAGE.c[n] for n in COLUMNS])
            self._staged = _upserts(insert(_TABLE).from_select(COLUMNS, staged))
            forced = insert(_TABLE).from_select(COLUMNS, staged)
            self._staged_forced = _upserts(forced, force=True)

    def flush(self) -> None:
        events = self._buffers.pending()
        if events:
            self._write(events, self._upserts, self._staged)
        self._buffers.clear()

    def force(self, events: Sequence[NoticeEvent]) -> None:
        """Write ``events`` as :meth:`flush` would, except that a cancel also replaces a row
        of its own version (see the class docstring); one transaction."""
        latest: dict[str, NoticeEvent] = {}
        for e in events:
            if e.notice_id not in latest or latest[e.notice_id].version < e.version:
                latest[e.notice_id] = e
        if latest:
            self._write(list(latest.values()), self._forced, self._staged_forced)

    def _write(self, events: Sequence[NoticeEvent], upserts: tuple[Any, Any], staged: Any) -> None:
        now = self._clock()
        active = [e for e in events if e.action is not Action.CANCEL]
        cancels = [e for e in events if e.action is Action.CANCEL]
        with transaction(self.engine) as conn:
            for i, group in enumerate((active, cancels)):
                if staged is not None and len(group) >= _COPY_FROM:
                    fill_stage(conn, _STAGE, [copy_values(e, now) for e in group])
                    conn.execute(staged[i])
                elif group:
                    conn.execute(upserts[i], [row_of(e, now) for e in group])

    def entries(self) -> Iterator[Entry]:
        """Every row of ``red_notice`` as an entry, streamed from one SELECT. The JSON columns
        come as text and are parsed in one ``json.loads`` per row (six per row were most of
        the time of a listing)."""
        t = _TABLE
        plain = [n for n in CONTENT_FIELDS if n not in JSON_COLUMNS]
        lists = [n for n in CONTENT_FIELDS if n in JSON_COLUMNS]
        query = select(
            t.c.notice_id,
            t.c.version,
            t.c.status,
            t.c.requesting_country,
            *[t.c[n] for n in plain],
            *[cast_to(t.c[n], Text).label(n) for n in lists],
        )
        skip = 4 + len(plain)
        with translate_errors(str(self.engine.url)), self.engine.connect() as conn:
            result = conn.execution_options(yield_per=5000).execute(query)
            for r in result:
                if r[2] != ACTIVE:
                    yield Entry(r[0], r[1], WITHDRAWN, "")
                    continue
                fields = dict(zip(plain, r[4:skip], strict=True))
                texts = ",".join("null" if v is None else v for v in r[skip:])
                fields.update(zip(lists, json.loads(f"[{texts}]"), strict=True))
                yield Entry(r[0], r[1], ACTIVE, content_hash(r[3], fields))

    def health(self) -> Health:
        try:
            with translate_errors(str(self.engine.url)), self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except NoticeBusError as exc:
            return Health(False, str(exc))
        return Health(True)

    def remind(self, reminder: Reminder) -> None:
        """Into ``notice_reminder``, where the bureau's officers see it; once, however often
        the same reminder is surfaced (a batch retried after an outage surfaces it again)."""
        values = {
            "notice_id": reminder.notice_id,
            "version": reminder.version,
            "kind": reminder.kind.value,
            "deadline": reminder.deadline,
            "reminded_at": reminder.at,
            "text": reminder.text,
        }
        same = select(LOCAL_REMINDER.c.id).where(
            LOCAL_REMINDER.c.notice_id == reminder.notice_id,
            LOCAL_REMINDER.c.kind == reminder.kind.value,
            LOCAL_REMINDER.c.reminded_at == reminder.at,
        )
        with transaction(self.engine) as conn:
            if conn.execute(same.limit(1)).first() is None:
                conn.execute(insert(LOCAL_REMINDER).values(**values))

    def responses(self) -> Sequence[tuple[object, Response]]:
        """Rows the bureau's officers put in ``notice_response`` that were not sent yet."""
        pending = LOCAL_RESPONSE.c.sent_at.is_(None)
        known = LOCAL_RESPONSE.c.answer.in_([a.value for a in Answer])
        query = select(LOCAL_RESPONSE).where(pending, known).order_by(LOCAL_RESPONSE.c.id)
        bad = select(LOCAL_RESPONSE.c.id, LOCAL_RESPONSE.c.answer).where(pending, ~known)
        # Mistyped answers are looked for once a minute, not on every call: they are rare, and
        # a hub asks each of its countries about ten times a minute.
        look = time.monotonic() >= self._next_bad_look
        with translate_errors(str(self.engine.url)), self.engine.connect() as conn:
            rows = conn.execute(query.limit(100)).all()
            unreadable = conn.execute(bad.limit(100)).all() if look else []
        if look:
            self._next_bad_look = time.monotonic() + _BAD_LOOK_EVERY_S
        for r in unreadable:
            if r.id not in self._told:
                self._told.add(r.id)
                log.error(
                    "%s: notice_response row %d is not sent: answer %r is not one of %s",
                    redact(str(self.engine.url)),
                    r.id,
                    r.answer,
                    ", ".join(a.value for a in Answer),
                )
        return [
            (
                r.id,
                Response(
                    country="",
                    notice_id=r.notice_id,
                    answer=Answer(r.answer),
                    at=as_utc(r.answered_at),
                    responder=r.responder,
                    text=r.text,
                ),
            )
            for r in rows
        ]

    def responses_sent(self, handles: Sequence[object]) -> None:
        with transaction(self.engine) as conn:
            conn.execute(
                update(LOCAL_RESPONSE)
                .where(LOCAL_RESPONSE.c.id.in_(handles))
                .values(sent_at=self._clock())
            )

    def close(self) -> None:
        self.engine.dispose()


def _upserts(stmt: Any, *, force: bool = False) -> tuple[Any, Any]:
    """The INSERT ``stmt`` as the upsert of active versions and as that of cancels; with
    ``force``, a cancel replaces a row of its own version too (:meth:`SqlSink.force`)."""
    newer = _TABLE.c.version < stmt.excluded.version
    not_older = _TABLE.c.version <= stmt.excluded.version
    active = stmt.on_conflict_do_update(
        index_elements=["notice_id"],
        set_={c.name: stmt.excluded[c.name] for c in _TABLE.c if c.name != "notice_id"},
        where=and_(
            newer,
            or_(_TABLE.c.status != WITHDRAWN, _TABLE.c.withdrawn_reason == NOT_ADDRESSED),
        ),
    )
    cancel = stmt.on_conflict_do_update(
        index_elements=["notice_id"],
        set_={name: stmt.excluded[name] for name in _CANCEL_COLUMNS},
        where=not_older if force else newer,
    )
    return active, cancel
