"""Database engines and the translation of driver errors into ours."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Column, Engine, MetaData, Table, create_engine, event, insert, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import ArgumentError, DataError, DBAPIError, IntegrityError
from sqlmodel import SQLModel

from notice_bus.errors import ConfigError, LocalSystemRejected, LocalSystemUnavailable


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def make_engine(url: str, tables: Sequence[Any] = (), *, ping: bool = True) -> Engine:
    """An engine for ``url`` with ``tables`` created when missing; when they are a role's
    (HQ's, the tracker's, a country's SQL sink's), migrated to the current schema instead
    (:func:`notice_bus.runtime.migrations.ensure_current`).

    SQLite files get their folder created and run in WAL mode, so a reader (``report``) does
    not block the writer (``tracker``). ``ping`` tests a pooled connection before each use
    (a round trip); code that retries a lost connection anyway can do without it.
    """
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    try:
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"timeout": 30})
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            # A host that drops packets must not block a write for the OS's TCP timeout.
            args = {"connect_timeout": 5} if url.startswith("postgresql") else {}
            engine = create_engine(url, pool_pre_ping=ping, connect_args=args)
    except (ArgumentError, ImportError) as exc:
        raise ConfigError(f"bad database URL {redact(url)}: {exc}") from exc
    event.listen(engine, "commit", _stages_kept)
    event.listen(engine, "rollback", _stages_undone)
    if tables:
        from notice_bus.runtime.migrations import ensure_current, role_of

        role = role_of(tables)
        if role is not None:
            ensure_current(engine, role)
        else:
            create_tables(engine, SQLModel.metadata, [t for t in tables if isinstance(t, Table)])
    return engine


# Any fixed number: the advisory lock that makes concurrent creators of our tables take turns.
_DDL_LOCK = 0x6E6F74696365


def create_tables(
    engine: Engine, metadata: MetaData, tables: Sequence[Table] | None = None
) -> None:
    """Create the missing ``tables`` (all of ``metadata``'s when None).

    Two instances of one country started together would otherwise both see a table missing and
    both create it, and the second CREATE fails: :func:`lock_ddl` makes them take turns.
    """
    with transaction(engine) as conn:
        lock_ddl(conn)
        metadata.create_all(conn, tables=tables)


def lock_ddl(conn: Connection) -> None:
    """Make concurrent creators of our tables take turns, until ``conn``'s transaction ends;
    call it first in the transaction. PostgreSQL: a transaction-scoped advisory lock. SQLite:
    the database's write lock, taken at once (``BEGIN IMMEDIATE``): Python's sqlite3 begins a
    transaction only at the first INSERT, so two processes opening a new file would both see
    no table and the second CREATE would fail with "table ... already exists"."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _DDL_LOCK})
    elif conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


#: SQLSTATE classes that refuse the data itself: 22 data exception (a value too long, out of
#: range, malformed), 23 integrity constraint violation. Sending the same row again can never
#: succeed, so these are the only refusals for good; anything else (permission denied, a
#: read-only transaction after a fail-over, a dropped table, an administrator's shutdown) is
#: the system's state, which an operator repairs, so it is an outage.
PERMANENT_SQLSTATE_CLASSES = frozenset({"22", "23"})


def is_refusal(exc: DBAPIError) -> bool:
    """Whether the database refused the data for good (see :data:`PERMANENT_SQLSTATE_CLASSES`).

    A server error carries its SQLSTATE (psycopg). An error without one (sqlite3 has none;
    psycopg's own checks, such as a NUL in a string, have none) is judged by its DBAPI class:
    only IntegrityError (a constraint) and DataError (a value) are about the data."""
    if exc.connection_invalidated:
        return False
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if isinstance(sqlstate, str) and sqlstate:
        return sqlstate[:2] in PERMANENT_SQLSTATE_CLASSES
    return isinstance(exc, IntegrityError | DataError)


@contextmanager
def translate_errors(where: str) -> Iterator[None]:
    """Raise driver errors as ours: :class:`LocalSystemRejected` only for a refusal of the data
    itself (:func:`is_refusal`), :class:`LocalSystemUnavailable` (retriable: the caller holds
    and retries) for everything else. The message names the database, without its password,
    and gives the driver's."""
    try:
        yield
    except DBAPIError as exc:
        if is_refusal(exc):
            raise LocalSystemRejected(f"{redact(where)}: {exc.orig}") from exc
        if exc.connection_invalidated:
            raise LocalSystemUnavailable(f"{redact(where)} connection lost: {exc.orig}") from exc
        raise LocalSystemUnavailable(f"{redact(where)} unavailable: {exc.orig}") from exc


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """One transaction, with errors translated."""
    with translate_errors(str(engine.url)), engine.begin() as conn:
        yield conn


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every time we store is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def dialect_insert(engine: Engine | Connection) -> Any:
    """The dialect's ``insert`` that knows ``ON CONFLICT`` (PostgreSQL and SQLite do)."""
    name = engine.dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert
    raise ConfigError(f"database {name!r} is not supported; use PostgreSQL or SQLite")


def stage_of(table: Table, columns: Sequence[str] | None = None) -> Table:
    """A temporary twin of ``table`` (``columns``, or all of them) to load a batch into in
    bulk before set-based statements from it: per-row parameters, on the way in and out of
    Python, cost more than the rows. PostgreSQL empties it at every commit; elsewhere the
    caller deletes what it put in."""
    names = columns if columns is not None else [c.name for c in table.c]
    return Table(
        f"nb_{table.name}_stage",
        MetaData(),
        *[Column(name, table.c[name].type) for name in names],
        prefixes=["TEMPORARY"],
        postgresql_on_commit="DELETE ROWS",
    )


def fill_stage(conn: Connection, stage: Table, rows: Sequence[Sequence[Any]]) -> None:
    """Put ``rows`` (values in ``stage``'s column order) into ``stage``, which is made on the
    connection's first use (again after a rollback of that use): COPY on PostgreSQL, an
    executemany elsewhere. Errors come as SQLAlchemy's, for :func:`translate_errors`."""
    made = conn.info.setdefault("nb_stages", set())
    if stage.name not in made:
        stage.create(conn, checkfirst=True)
        made.add(stage.name)
        conn.info.setdefault("nb_stages_new", set()).add(stage.name)  # until committed
    columns = [c.name for c in stage.c]
    if conn.dialect.name != "postgresql":
        conn.execute(insert(stage), [dict(zip(columns, row, strict=True)) for row in rows])
        return
    quoted = ", ".join(f'"{name}"' for name in columns)
    statement = f"COPY {stage.name} ({quoted}) FROM STDIN"
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
    except psycopg.Error as exc:
        # Straight from the driver, past SQLAlchemy: wrapped as SQLAlchemy would, so that
        # translate_errors tells a refused value from an outage.
        raise DBAPIError.instance(statement, None, exc, psycopg.Error) from exc


def _stages_kept(conn: Connection) -> None:
    conn.info.pop("nb_stages_new", None)


def _stages_undone(conn: Connection) -> None:
    """A rollback undoes the creation of the stages made in its transaction. (An invalidated
    connection's info goes with it.)"""
    if not conn.invalidated:
        conn.info.get("nb_stages", set()).difference_update(conn.info.pop("nb_stages_new", ()))
