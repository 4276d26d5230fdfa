"""Database engines and the translation of driver errors into ours."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Engine, MetaData, Table, create_engine, event, insert, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import InterfaceError as SAInterfaceError
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
    """An engine for ``url`` with ``tables`` created when missing.

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
    if tables:
        create_tables(engine, SQLModel.metadata, [t for t in tables if isinstance(t, Table)])
    return engine


# Any fixed number: the advisory lock that makes concurrent creators of our tables take turns.
_DDL_LOCK = 0x6E6F74696365


def create_tables(
    engine: Engine, metadata: MetaData, tables: Sequence[Table] | None = None
) -> None:
    """Create the missing ``tables`` (all of ``metadata``'s when None).

    Two instances of one country started together would otherwise both see a table missing and
    both create it, and PostgreSQL refuses the second CREATE with a duplicate-key error. DDL is
    transactional there, so a transaction-scoped advisory lock serializes them.
    """
    with transaction(engine) as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _DDL_LOCK})
        metadata.create_all(conn, tables=tables)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


@contextmanager
def translate_errors(where: str) -> Iterator[None]:
    """Raise driver errors as ours: lost connections are retriable, constraint errors are not."""
    try:
        yield
    except IntegrityError as exc:
        raise LocalSystemRejected(f"{redact(where)}: {exc.orig}") from exc
    except (OperationalError, SAInterfaceError) as exc:
        raise LocalSystemUnavailable(f"{redact(where)} unavailable: {exc.orig}") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise LocalSystemUnavailable(f"{redact(where)} connection lost: {exc.orig}") from exc
        raise LocalSystemRejected(f"{redact(where)}: {exc.orig}") from exc


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
    connection's first use: COPY on PostgreSQL, an executemany elsewhere."""
    made = conn.info.setdefault("nb_stages", set())
    if stage.name not in made:
        stage.create(conn, checkfirst=True)
        made.add(stage.name)
    columns = [c.name for c in stage.c]
    if conn.dialect.name != "postgresql":
        conn.execute(insert(stage), [dict(zip(columns, row, strict=True)) for row in rows])
        return
    quoted = ", ".join(f'"{name}"' for name in columns)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY {stage.name} ({quoted}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
