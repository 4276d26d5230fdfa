"""HQ's database under concurrent HQ processes: one writer per notice, one relay at a time.

Writers. On PostgreSQL a write transaction locks the rows of the notices it reads
(``SELECT ... FOR UPDATE``, in ``notice_id`` order so that two writers never deadlock), and a
bootstrap locks ``hq_notice`` against every writer. On SQLite every transaction of HQ's engine
starts with ``BEGIN IMMEDIATE``, which takes the database's write lock. Besides, an update of
``hq_notice`` names the version it read and must touch one row, and ``hq_version``'s key
``(notice_id, version)`` refuses a version made twice. Two writers creating the same notice
still meet (there is no row to lock yet): the loser's transaction is tried again, and sees
the notice as existing.

So outbox rows of one notice are written in version order, and, with one relay at a time
sending in ``id`` order, a country's topic never gets a version of a notice after a later one.

Relay. A PostgreSQL session-level advisory lock on a connection of its own (a relay that dies
releases it with its connection), or an ``flock`` on a file beside the SQLite database
(SQLite is single-host), and a threading lock for the threads of one process.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Engine, event, select, text
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from notice_bus.errors import WriteConflict
from notice_bus.hq.tables import HQ_NOTICE, HQ_VERSION, OUTBOX
from notice_bus.runtime.db import translate_errors
from notice_bus.wire.topics import TopicNames

log = logging.getLogger("notice_bus.hq")
T = TypeVar("T")
_OUTBOX: Any = OUTBOX
_ATTEMPTS = 5
#: Ids per ``IN (...)``: well below every driver's parameter limit.
CHUNK = 1000
# Any fixed numbers: the advisory locks of HQ's schema changes and of its relay.
_DDL_LOCK = 0x68715F646471
_RELAY_LOCK = 0x68715F72656C
# What a lost race looks like: a duplicate key (23505), a serialization failure or deadlock
# (class 40) on PostgreSQL; a duplicate primary or unique key on SQLite.
_SQLITE_DUPLICATE = frozenset({"SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE"})


def prepare(engine: Engine) -> None:
    """Make ``engine`` (HQ's, its tables created) ready for concurrent HQ processes: on SQLite
    every transaction takes the write lock at its start, and the outbox index of
    ``(key, topic)`` is created on a database made before it existed."""
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_manual_transactions)
        event.listen(engine, "begin", _sqlite_begin_immediate)
        if engine.url.database in (None, "", ":memory:"):  # its one connection is the database
            with engine.connect() as conn:
                _sqlite_manual_transactions(conn.connection.driver_connection, None)
        else:
            engine.dispose()  # pooled connections were made without the listeners
    index = next(i for i in OUTBOX.indexes if i.name == "ix_hq_outbox_key_topic")
    with translate_errors(str(engine.url)), engine.begin() as conn:
        if engine.dialect.name == "postgresql":  # two HQs starting together take turns
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _DDL_LOCK})
        # Looked up in the catalog first: CREATE INDEX would lock the table even if it exists.
        index.create(conn, checkfirst=True)


def _sqlite_manual_transactions(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # pysqlite's implicit BEGIN would be a deferred one


def _sqlite_begin_immediate(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def write(engine: Engine, work: Callable[[Session], T], attempts: int = _ATTEMPTS) -> T:
    """``work`` in one transaction, committed when it returns; tried again from the start
    (``attempts`` times in all) when it lost a race to another writer, then
    :class:`WriteConflict`. Other database errors are translated as usual."""
    for attempt in range(1, attempts + 1):
        try:
            with translate_errors(str(engine.url)):
                try:
                    with Session(engine) as session, session.begin():
                        return work(session)
                except DBAPIError as exc:
                    if not _lost_race(exc):
                        raise
                    raise WriteConflict(f"another HQ wrote the same notices: {exc.orig}") from exc
        except WriteConflict:
            if attempt == attempts:
                raise
            log.info("HQ lost a race to another writer; trying again (%d)", attempt)
            time.sleep(random.uniform(0, 0.05 * attempt))  # out of step with the winner
    raise AssertionError("unreachable")


def _lost_race(exc: DBAPIError) -> bool:
    code = getattr(exc.orig, "sqlstate", None)
    if isinstance(code, str):
        return code == "23505" or code.startswith("40")
    return isinstance(exc, IntegrityError) and (
        getattr(exc.orig, "sqlite_errorname", "") in _SQLITE_DUPLICATE
    )


def stale(notice_id: str) -> WriteConflict:
    """The error of an update that found the notice at another version than it read."""
    return WriteConflict(f"notice {notice_id} changed while HQ was writing it")


def lock_notices(session: Session, notice_ids: Iterable[str]) -> dict[str, Row[Any]]:
    """The current ``hq_notice`` rows of ``notice_ids``, locked until the transaction ends
    (SQLite: already locked whole). One query per thousand ids."""
    ids = sorted(set(notice_ids))
    found: dict[str, Row[Any]] = {}
    for i in range(0, len(ids), CHUNK):
        query = (
            select(HQ_NOTICE)
            .where(HQ_NOTICE.c.notice_id.in_(ids[i : i + CHUNK]))
            .order_by(HQ_NOTICE.c.notice_id)
            .with_for_update()
        )
        found.update((r.notice_id, r) for r in session.execute(query))
    return found


def lock_all_notices(session: Session) -> None:
    """Keep every writer out until the transaction ends; readers go on."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("LOCK TABLE hq_notice IN EXCLUSIVE MODE"))


def delivered(
    session: Session, names: TopicNames, notice_ids: Sequence[str]
) -> dict[str, set[str]]:
    """Every country each of ``notice_ids`` was ever queued for (any version), from the
    outbox, which keeps every record HQ queued."""
    out: dict[str, set[str]] = {}
    for i in range(0, len(notice_ids), CHUNK):
        query = (
            select(_OUTBOX.c.key, _OUTBOX.c.topic)
            .where(_OUTBOX.c.key.in_(notice_ids[i : i + CHUNK]))
            .distinct()
        )
        for key, topic in session.execute(query):
            country = names.country_of(topic)
            if country is not None:
                out.setdefault(key, set()).add(country)
    return out


def current_payloads(session: Session, notice_ids: Sequence[str]) -> dict[str, bytes]:
    """The stored bytes of the current version of each of ``notice_ids`` that has them
    (a notice last written before versions were stored has none)."""
    out: dict[str, bytes] = {}
    for i in range(0, len(notice_ids), CHUNK):
        query = (
            select(HQ_VERSION.c.notice_id, HQ_VERSION.c.payload)
            .join(
                HQ_NOTICE,
                (HQ_NOTICE.c.notice_id == HQ_VERSION.c.notice_id)
                & (HQ_NOTICE.c.version == HQ_VERSION.c.version),
            )
            .where(HQ_NOTICE.c.notice_id.in_(notice_ids[i : i + CHUNK]))
        )
        out.update((r.notice_id, r.payload) for r in session.execute(query))
    return out


class RelayTurn:
    """One relay at a time over every HQ process on one database, and every thread of one."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._threads = threading.Lock()

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._threads:
            if self._engine.dialect.name == "postgresql":
                with self._advisory():
                    yield
            else:
                with self._file():
                    yield

    @contextmanager
    def _advisory(self) -> Iterator[None]:
        where = str(self._engine.url)
        with translate_errors(where):
            # The lock is the session's: no transaction is needed, nor left open meanwhile.
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            with translate_errors(where):
                conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _RELAY_LOCK})
            yield
        finally:
            try:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _RELAY_LOCK})
            except DBAPIError:
                conn.invalidate()  # closing the session releases the lock
            conn.close()

    @contextmanager
    def _file(self) -> Iterator[None]:
        database = self._engine.url.database
        if not database or database == ":memory:":
            yield  # one connection's database: no other process can see it
            return
        fd = os.open(f"{database}.relay-lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock
