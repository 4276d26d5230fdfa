"""An outage is never taken for a refusal: only a refusal of the data itself (SQLSTATE classes
22 and 23, sqlite3's IntegrityError and DataError; HTTP 400, 409, 413, 415, 422) is
LocalSystemRejected, which dead-letters a notice. Anything else an operator repairs (a revoked
grant, a read-only database after a fail-over, a dropped table, an expired token, a wrong
route) is LocalSystemUnavailable: the adapter holds the batch and retries."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa

from notice_bus.bureau.sinks.sql import SqlSink
from notice_bus.errors import LocalSystemRejected, LocalSystemUnavailable
from notice_bus_rest_api import RestApi
from tests.factories import PERSON, event
from tests.support.http_server import NationalApi

TOKEN = "s3cret-token"


def execute(url: str, *statements: str) -> None:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    engine.dispose()


def count(url: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        n = conn.exec_driver_sql("SELECT count(*) FROM red_notice").scalar_one()
    engine.dispose()
    return int(n)


# --- PostgreSQL ----------------------------------------------------------------------------


class Bureau:
    """A bureau's PostgreSQL database, our tables made by its DBA (``admin``), written by the
    adapter through a role of its own (``sink``)."""

    def __init__(self, admin: str) -> None:
        self.admin = admin
        self.name = sa.make_url(admin).database
        self.role = f"nb_sink_{uuid.uuid4().hex[:8]}"
        SqlSink(admin).close()  # our tables, as the DBA made them
        execute(
            admin,
            f"CREATE ROLE {self.role} LOGIN PASSWORD 'pw'",
            f"GRANT USAGE ON SCHEMA public TO {self.role}",
            f"GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO {self.role}",
        )
        url = sa.make_url(admin).set(username=self.role, password="pw")
        self.sink = SqlSink(url.render_as_string(hide_password=False))

    def reconnect(self) -> None:
        """What a fail-over does: every session is new."""
        self.sink.engine.dispose()

    def writable(self) -> None:
        """Undo ``default_transaction_read_only``, from another database: every session of
        this one is read-only, the DBA's too."""
        elsewhere = sa.make_url(self.admin).set(database="postgres")
        execute(
            elsewhere.render_as_string(hide_password=False),
            f'ALTER DATABASE "{self.name}" RESET default_transaction_read_only',
        )

    def close(self) -> None:
        self.sink.close()
        self.writable()
        execute(self.admin, f"DROP OWNED BY {self.role}")
        execute(self.admin, f"DROP ROLE {self.role}")


@pytest.fixture
def bureau(new_postgres_db: Callable[[], str]) -> Iterator[Bureau]:
    b = Bureau(new_postgres_db())
    yield b
    b.close()


@pytest.mark.postgres
def test_revoked_insert_is_an_outage_and_the_batch_goes_in_once_granted(bureau: Bureau) -> None:
    execute(bureau.admin, f"REVOKE INSERT, UPDATE ON red_notice FROM {bureau.role}")
    bureau.sink.add(event("2026/1"), 0)
    with pytest.raises(LocalSystemUnavailable, match="permission denied") as raised:
        bureau.sink.flush()
    message = str(raised.value)
    assert bureau.name in message and ":pw@" not in message  # the database, redacted
    execute(bureau.admin, f"GRANT INSERT, UPDATE ON red_notice TO {bureau.role}")
    bureau.sink.flush()  # the held batch, retried
    assert count(bureau.admin) == 1


@pytest.mark.postgres
def test_a_read_only_database_after_a_fail_over_is_an_outage(bureau: Bureau) -> None:
    execute(bureau.admin, f'ALTER DATABASE "{bureau.name}" SET default_transaction_read_only = on')
    bureau.reconnect()
    bureau.sink.add(event("2026/2"), 0)
    with pytest.raises(LocalSystemUnavailable, match="read-only transaction"):
        bureau.sink.flush()
    bureau.writable()
    bureau.reconnect()
    bureau.sink.flush()
    assert count(bureau.admin) == 1


@pytest.mark.postgres
def test_a_dropped_table_is_an_outage(bureau: Bureau) -> None:
    execute(bureau.admin, "DROP TABLE red_notice")
    bureau.sink.add(event("2026/3"), 0)
    with pytest.raises(LocalSystemUnavailable, match="red_notice"):
        bureau.sink.flush()


@pytest.mark.postgres
@pytest.mark.parametrize("batch", [1, 250], ids=["upsert", "copy"])
def test_a_value_too_long_is_a_refusal(bureau: Bureau, batch: int) -> None:
    # date_of_birth is VARCHAR(10); 250 rows go through COPY, past SQLAlchemy.
    too_long = event("2026/4000", person=replace(PERSON, date_of_birth="1980/04/12 at noon"))
    for i in range(batch - 1):
        bureau.sink.add(event(f"2026/{i + 1}"), 0)
    bureau.sink.add(too_long, 0)
    with pytest.raises(LocalSystemRejected, match="too long"):
        bureau.sink.flush()


@pytest.mark.postgres
def test_a_check_violation_is_a_refusal(bureau: Bureau) -> None:
    execute(bureau.admin, "ALTER TABLE red_notice ADD CONSTRAINT sane CHECK (version < 1000)")
    bureau.sink.add(event("2026/5", 5000), 0)
    with pytest.raises(LocalSystemRejected, match="sane"):
        bureau.sink.flush()


# --- SQLite --------------------------------------------------------------------------------


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/fr.db"


def test_sqlite_a_file_that_is_no_longer_a_database_is_an_outage(
    sqlite_url: str, tmp_path: Path
) -> None:
    sink = SqlSink(sqlite_url)
    sink.engine.dispose()
    for name in ("fr.db-wal", "fr.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    (tmp_path / "fr.db").write_bytes(b"this is a restore gone wrong, not a database" * 100)
    sink.add(event("2026/6"), 0)
    with pytest.raises(LocalSystemUnavailable, match="not a database"):
        sink.flush()
    sink.close()


def test_sqlite_a_dropped_table_is_an_outage(sqlite_url: str) -> None:
    sink = SqlSink(sqlite_url)
    execute(sqlite_url, "DROP TABLE red_notice")
    sink.add(event("2026/7"), 0)
    with pytest.raises(LocalSystemUnavailable, match="no such table"):
        sink.flush()
    sink.close()


def test_sqlite_a_constraint_is_a_refusal(sqlite_url: str) -> None:
    sink = SqlSink(sqlite_url)
    execute(
        sqlite_url,
        "CREATE TRIGGER sane BEFORE INSERT ON red_notice WHEN NEW.version >= 1000"
        " BEGIN SELECT RAISE(ABORT, 'version out of range'); END",
    )
    sink.add(event("2026/8", 5000), 0)
    with pytest.raises(LocalSystemRejected, match="version out of range"):
        sink.flush()
    sink.close()


# --- REST ----------------------------------------------------------------------------------


@pytest.fixture
def api() -> Iterator[NationalApi]:
    with NationalApi(token=TOKEN) as server:
        yield server


def test_rest_an_expired_token_is_an_outage(api: NationalApi) -> None:
    with pytest.raises(LocalSystemUnavailable, match="HTTP 401"):
        RestApi(base_url=api.url, token="expired-token").write([event("2026/9")])
    RestApi(base_url=api.url, token=TOKEN).write([event("2026/9")])  # renewed: it goes in
    assert api.notices["2026/9"]["version"] == 1


@pytest.mark.parametrize("status", [401, 403, 404, 405, 307])
def test_rest_answers_an_operator_repairs_are_outages(api: NationalApi, status: int) -> None:
    api.fail_next(1, status, body='{"error": "not now"}')
    with pytest.raises(LocalSystemUnavailable, match=f"HTTP {status}") as raised:
        RestApi(base_url=api.url, token=TOKEN).write([event("2026/10")])
    assert "not now" in str(raised.value)


# The refusals themselves (400, 409, 413, 415, 422): test_plugin_rest_api.py.
