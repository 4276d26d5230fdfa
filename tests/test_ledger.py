"""Where a plug-in's version ledger lives: in the plug-in's own database when it has one, else in
a database shared by every host, else (with a warning) in a file on this host; and what it
makes of withdrawals that are not final."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

import pytest
import sqlalchemy as sa

from notice_bus.bureau.sinks import local_system
from notice_bus.bureau.sinks.local_system import LedgerSink, LocalSystem, Systems
from notice_bus.bureau.sinks.sink import Sink
from notice_bus.errors import LocalSystemUnavailable
from notice_bus.runtime.settings import Settings
from notice_bus.wire.model import NOT_ADDRESSED, Action, NoticeEvent
from notice_bus_legacy_postgres import LegacyPostgres
from tests.factories import event

DDL = (resources.files("notice_bus_legacy_postgres") / "schema.sql").read_text()
RECORDER = "tests.test_ledger:Recorder"


class Recorder(LocalSystem):
    """A plug-in that takes everything and remembers what it was handed, in order."""

    def __init__(self) -> None:
        self.handed: list[tuple[str, str, int]] = []

    def write(self, notices: Sequence[NoticeEvent]) -> None:
        self.handed += [("write", e.notice_id, e.version) for e in notices]

    def withdraw(self, cancels: Sequence[NoticeEvent]) -> None:
        self.handed += [("withdraw", e.notice_id, e.version) for e in cancels]


def deliver(sink: Sink, *events: NoticeEvent) -> None:
    for e in events:
        sink.add(e, 0)
        sink.flush()


def handed(sink: Sink) -> list[tuple[str, str, int]]:
    assert isinstance(sink, LedgerSink) and isinstance(sink.system, Recorder)
    return sink.system.handed


def rows(url: str, query: str) -> list[tuple[object, ...]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = [tuple(r) for r in conn.exec_driver_sql(query)]
    engine.dispose()
    return found


@pytest.mark.postgres
def test_a_cancel_taken_in_on_one_host_is_respected_on_another(
    new_postgres_db: Callable[[], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = new_postgres_db()
    settings = Settings.load(env={"NOTICE_BUS_LEDGER_DATABASE_URL": shared})
    systems = Systems(RECORDER, {}, ledger_url=settings.ledger_database_url)
    hosts = [tmp_path / "host-a", tmp_path / "host-b"]
    for host in hosts:
        host.mkdir()

    monkeypatch.chdir(hosts[0])
    first = systems.sink("FR")
    deliver(first, event("2026/1"), event("2026/1", 2, Action.CANCEL, reason="arrested"))
    first.close()

    # FR's partitions move to another host, which reads an older version again.
    monkeypatch.chdir(hosts[1])
    second = systems.sink("FR")
    deliver(second, event("2026/1"), event("2026/1", 2, Action.CANCEL, reason="arrested"))
    second.close()
    assert handed(first) == [("write", "2026/1", 1), ("withdraw", "2026/1", 2)]
    assert handed(second) == []
    assert [list(host.iterdir()) for host in hosts] == [[], []]  # nothing on either disk


@pytest.mark.postgres
def test_countries_sharing_a_ledger_database_are_kept_apart(
    new_postgres_db: Callable[[], str],
) -> None:
    shared = new_postgres_db()
    fr = LedgerSink(Recorder(), shared, country="FR")
    de = LedgerSink(Recorder(), shared, country="DE")
    deliver(fr, event("2026/2", 2, Action.UPDATE), event("2026/3"))
    deliver(fr, event("2026/3", 2, Action.CANCEL))
    # DE's own first versions: what FR has taken in says nothing of DE's copy.
    deliver(de, event("2026/2"), event("2026/3"))
    assert handed(de) == [("write", "2026/2", 1), ("write", "2026/3", 1)]
    for sink in (fr, de):
        sink.close()
    assert sorted(
        rows(shared, "SELECT country, notice_id, version, action FROM notice_ledger")
    ) == [
        ("DE", "2026/2", 1, "PUBLISH"),
        ("DE", "2026/3", 1, "PUBLISH"),
        ("FR", "2026/2", 2, "UPDATE"),
        ("FR", "2026/3", 2, "CANCEL"),
    ]


def test_without_a_shared_ledger_a_file_on_this_host_is_used_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(local_system, "_warned_local", False)
    with caplog.at_level(logging.WARNING, logger="notice_bus.local_system"):
        sinks = [Systems(RECORDER, {}).sink(cc) for cc in ("FR", "DE")]
    warnings = [r.getMessage() for r in caplog.records if r.name == "notice_bus.local_system"]
    assert len(warnings) == 1 and "per host" in warnings[0]
    assert "ledger_database_url" in warnings[0]
    for sink in sinks:
        deliver(sink, event("2026/4"))
        sink.close()
    assert sorted(p.name for p in (tmp_path / ".notice-bus").iterdir()) == [
        "ledger-DE.db",
        "ledger-FR.db",
    ]


def test_an_existing_per_country_ledger_file_is_still_read(tmp_path: Path) -> None:
    path = tmp_path / "ledger-FR.db"
    with sqlite3.connect(path) as conn:  # as every adapter wrote it before
        conn.execute(
            "CREATE TABLE notice_ledger (notice_id VARCHAR(16) NOT NULL PRIMARY KEY,"
            " version INTEGER NOT NULL, action VARCHAR(8) NOT NULL)"
        )
        conn.execute(
            "INSERT INTO notice_ledger VALUES ('2026/5', 3, 'CANCEL'), ('2026/6', 2, 'UPDATE')"
        )
    conn.close()
    sink = Systems(RECORDER, {}, ledger_url=f"sqlite:///{tmp_path}/ledger-{{country}}.db").sink(
        "FR"
    )
    deliver(
        sink, event("2026/5", 2, Action.UPDATE), event("2026/6"), event("2026/6", 3, Action.UPDATE)
    )
    sink.close()
    assert handed(sink) == [("write", "2026/6", 3)]
    assert rows(f"sqlite:///{path}", "SELECT * FROM notice_ledger ORDER BY notice_id") == [
        ("2026/5", 3, "CANCEL"),
        ("2026/6", 3, "UPDATE"),
    ]


@pytest.mark.postgres
def test_legacy_postgres_keeps_its_ledger_in_its_own_database_and_schema(
    new_postgres_db: Callable[[], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bureau, shared = new_postgres_db(), new_postgres_db()
    engine = sa.create_engine(bureau)
    with engine.begin() as conn:
        for statement in ("CREATE SCHEMA interpol", "SET search_path TO interpol", DDL):
            conn.exec_driver_sql(statement)
    engine.dispose()
    monkeypatch.chdir(tmp_path)
    options = {"database_url": bureau, "schema": "interpol"}
    for ledger_url in (None, shared):  # its own database wins over a shared one
        sink = Systems("legacy-postgres", options, ledger_url=ledger_url).sink("FR")
        deliver(sink, event("2026/7"), event("2026/7", 2, Action.CANCEL, reason="arrested"))
        deliver(sink, event("2026/7", 3, Action.UPDATE))
        sink.close()
    query = "SELECT country, notice_id, version, action FROM interpol.notice_ledger"
    assert rows(bureau, query) == [("FR", "2026/7", 2, "CANCEL")]
    assert rows(bureau, "SELECT record_state FROM interpol.wanted_person") == [("W",)]
    assert list(tmp_path.iterdir()) == []
    assert "notice_ledger" not in sa.inspect(sa.create_engine(shared)).get_table_names()


def test_a_withdrawal_as_no_longer_addressed_is_not_final_a_cancel_is(tmp_path: Path) -> None:
    sink = LedgerSink(Recorder(), f"sqlite:///{tmp_path}/ledger.db")
    deliver(
        sink,
        event("2026/8"),
        event("2026/8", 2, Action.CANCEL, reason=NOT_ADDRESSED),  # retargeted away from us
        event("2026/8"),  # a replay of the older version: still stale
        event("2026/8", 3, Action.UPDATE),  # retargeted to us again
        event("2026/8", 4, Action.CANCEL, reason="arrested"),
        event("2026/8", 5, Action.UPDATE),
        event("2026/8", 6, Action.CANCEL, reason=NOT_ADDRESSED),
    )
    assert handed(sink) == [
        ("write", "2026/8", 1),
        ("withdraw", "2026/8", 2),
        ("write", "2026/8", 3),
        ("withdraw", "2026/8", 4),
    ]
    query = "SELECT notice_id, version, action FROM notice_ledger"
    sink.close()
    assert rows(f"sqlite:///{tmp_path}/ledger.db", query) == [("2026/8", 4, "CANCEL")]


def test_an_unlisted_notice_is_recorded_as_such(tmp_path: Path) -> None:
    sink = LedgerSink(Recorder(), f"sqlite:///{tmp_path}/ledger.db")
    deliver(sink, event("2026/9"), event("2026/9", 2, Action.CANCEL, reason=NOT_ADDRESSED))
    sink.close()
    query = "SELECT notice_id, version, action FROM notice_ledger"
    assert rows(f"sqlite:///{tmp_path}/ledger.db", query) == [("2026/9", 2, "UNLISTED")]


@pytest.mark.postgres
def test_a_ledger_whose_database_is_down_at_start_is_an_outage_not_a_crash() -> None:
    # The bureau's database, and so the ledger in it, may be down when the adapter starts.
    sink = LedgerSink(LegacyPostgres(database_url="postgresql://x@127.0.0.1:1/x"), country="FR")
    sink.add(event("2026/10"), 0)
    with pytest.raises(LocalSystemUnavailable):
        sink.flush()
    assert not sink.health().ok
    sink.close()
