"""The legacy-postgres plug-in on real PostgreSQL, against the bureau's own schema."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from notice_bus.bureau.adapter import Adapter
from notice_bus.bureau.sinks.local_system import LedgerSink, load_system
from notice_bus.errors import ConfigError, LocalSystemRejected, LocalSystemUnavailable
from notice_bus.tracker.tables import ACK
from notice_bus.wire.model import NOT_ADDRESSED, Action, ArrestWarrant, NoticeEvent
from notice_bus_legacy_postgres import LegacyPostgres
from tests.conftest import Bus
from tests.factories import PERSON, draft, event

pytestmark = pytest.mark.postgres
DDL = (resources.files("notice_bus_legacy_postgres") / "schema.sql").read_text()
UNREACHABLE = "postgresql://x@127.0.0.1:1/x"

THAI = replace(
    PERSON,
    name="ศรีสุข",
    forename="สมชาย",
    date_of_birth="1975/12/31",
    sex_id="U",
    nationalities=("TH", "LA", "TH"),
    country_of_birth_id="TH",
    place_of_birth="เชียงใหม่",
    distinguishing_marks="รอยสักมังกรที่แขนซ้าย",
    height=1.15,
    weight=58.25,
    arrest_warrants=(
        ArrestWarrant("TH", "ค้ายาเสพติด", "Drug trafficking"),
        ArrestWarrant("LA", "ฟอกเงิน"),
    ),
)


def execute(url: str, *statements: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    engine.dispose()


@pytest.fixture
def legacy_db(new_postgres_db: Callable[[], str]) -> str:
    """A fresh database holding the bureau's schema, as the plug-in would find it."""
    url = new_postgres_db()
    execute(url, DDL)
    return url


@pytest.fixture
def system(legacy_db: str) -> Iterator[LegacyPostgres]:
    legacy = LegacyPostgres(database_url=legacy_db)
    yield legacy
    legacy.close()


def snapshot(url: str, schema: str = "public") -> dict[str, Any]:
    """Every legacy row: each person's columns with its warrants and nationalities."""
    engine = sa.create_engine(url)
    out: dict[str, Any] = {}
    with engine.connect() as conn:
        q = f"SELECT * FROM {schema}.wanted_person"
        for row in conn.exec_driver_sql(q).mappings():
            out[row["wp_ref"]] = {**row, "warrants": [], "nationalities": set()}
        q = f"SELECT * FROM {schema}.wanted_person_warrant ORDER BY wp_ref, seq"
        for w in conn.exec_driver_sql(q).all():
            out[w.wp_ref]["warrants"].append((w.seq, w.issuing_state, w.offence, w.offence_en))
        q = f"SELECT * FROM {schema}.wanted_person_nationality"
        for n in conn.exec_driver_sql(q).all():
            out[n.wp_ref]["nationalities"].add(n.country)
    engine.dispose()
    return out


def test_write_maps_fields_onto_legacy_columns(system: LegacyPostgres, legacy_db: str) -> None:
    ru = event("2026/1", person=replace(PERSON, height=1.65, weight=81.5))
    th = event("2026/2", requesting_country="TH", person=THAI)
    system.write([ru, th])

    rows = snapshot(legacy_db)
    a = rows["2026/1"]
    assert (a["surname"], a["given_names"], a["birth_date_text"]) == (
        "Иванов",
        "Алексей",
        "1980-04",
    )
    assert (a["gender"], a["height_cm"], a["weight_kg"]) == ("M", 165, Decimal("81.5"))
    assert (a["record_state"], a["interpol_revision"], a["requesting_state"]) == ("A", 1, "RU")
    assert a["warrants"] == [(1, "RU", "Мошенничество", "Fraud")]
    assert a["nationalities"] == {"RU"}

    b = rows["2026/2"]
    assert (b["surname"], b["given_names"], b["birth_place"]) == ("ศรีสุข", "สมชาย", "เชียงใหม่")
    assert b["marks"] == "รอยสักมังกรที่แขนซ้าย"
    assert (b["birth_date_text"], b["gender"], b["birth_country"]) == ("1975-12-31", None, "TH")
    # 1.15 m is 114.999... cm in floating point; the legacy column wants 115.
    assert (b["height_cm"], b["weight_kg"]) == (115, Decimal("58.3"))
    assert b["warrants"] == [
        (1, "TH", "ค้ายาเสพติด", "Drug trafficking"),
        (2, "LA", "ฟอกเงิน", None),
    ]
    assert b["nationalities"] == {"TH", "LA"}  # listed twice, stored once


def test_update_replaces_child_rows_and_a_replay_changes_nothing(
    system: LegacyPostgres, legacy_db: str
) -> None:
    system.write([event("2026/3", person=THAI)])
    v2 = replace(
        PERSON,
        name="Petrov",
        nationalities=("KZ",),
        arrest_warrants=(ArrestWarrant("KZ", "Fraud"),),
    )
    update = event("2026/3", 2, Action.UPDATE, person=v2)
    system.write([update])
    row = snapshot(legacy_db)["2026/3"]
    assert (row["surname"], row["interpol_revision"], row["record_state"]) == ("Petrov", 2, "A")
    assert row["warrants"] == [(1, "KZ", "Fraud", None)]
    assert row["nationalities"] == {"KZ"}

    before = snapshot(legacy_db)
    system.write([update])  # a replay after a crash, before the ledger was updated
    assert snapshot(legacy_db) == before


def test_sql_keeps_versions_ordered_without_the_ledger(
    system: LegacyPostgres, legacy_db: str
) -> None:
    v3 = event("2026/4", 3, Action.UPDATE, person=THAI)
    system.write([v3])
    # Stale, in a call that also writes another notice: the row and its children stay.
    system.write([event("2026/4", 2, Action.UPDATE), event("2026/40")])
    row = snapshot(legacy_db)["2026/4"]
    assert (row["surname"], row["interpol_revision"], len(row["warrants"])) == ("ศรีสุข", 3, 2)
    assert row["nationalities"] == {"TH", "LA"}

    system.withdraw([event("2026/4", 4, Action.CANCEL, reason="arrested")])
    system.write([event("2026/4", 5, Action.UPDATE)])  # never reactivates a withdrawn record
    system.withdraw([event("2026/4", 4, Action.CANCEL, reason="replayed")])
    row = snapshot(legacy_db)["2026/4"]
    assert (row["record_state"], row["interpol_revision"]) == ("W", 4)
    assert (row["withdrawn_reason"], row["surname"]) == ("arrested", "ศรีสุข")
    assert len(row["warrants"]) == 2  # a withdrawal keeps the record's warrants


def test_a_record_withdrawn_as_no_longer_addressed_comes_back_a_cancelled_one_never(
    system: LegacyPostgres, legacy_db: str
) -> None:
    system.write([event("2026/13")])
    system.withdraw([event("2026/13", 2, Action.CANCEL, reason=NOT_ADDRESSED)])
    row = snapshot(legacy_db)["2026/13"]
    assert (row["record_state"], row["interpol_revision"]) == ("W", 2)
    system.write([event("2026/13", 2, Action.UPDATE)])  # not a higher revision: stays withdrawn
    assert snapshot(legacy_db)["2026/13"]["record_state"] == "W"

    system.write([event("2026/13", 3, Action.UPDATE, person=THAI)])  # addressed to us again
    row = snapshot(legacy_db)["2026/13"]
    assert (row["record_state"], row["interpol_revision"], row["surname"]) == ("A", 3, "ศรีสุข")
    assert (row["withdrawn_reason"], len(row["warrants"])) == (None, 2)

    system.withdraw([event("2026/13", 4, Action.CANCEL, reason="arrested")])
    # Neither an unlisting nor an update, however high its revision, undoes a cancel.
    system.withdraw([event("2026/13", 5, Action.CANCEL, reason=NOT_ADDRESSED)])
    system.write([event("2026/13", 6, Action.UPDATE)])
    row = snapshot(legacy_db)["2026/13"]
    assert (row["record_state"], row["interpol_revision"]) == ("W", 4)
    assert row["withdrawn_reason"] == "arrested"


def test_withdraw_of_a_notice_never_had(system: LegacyPostgres, legacy_db: str) -> None:
    system.withdraw([event("2026/5", 4, Action.CANCEL, reason="withdrawn by RU")])
    system.write([event("2026/5", 3, Action.UPDATE)])  # its older version, arriving late
    row = snapshot(legacy_db)["2026/5"]
    assert (row["record_state"], row["interpol_revision"]) == ("W", 4)
    assert (row["withdrawn_reason"], row["requesting_state"]) == ("withdrawn by RU", "RU")
    assert (row["surname"], row["warrants"], row["nationalities"]) == (None, [], set())


def test_a_refused_row_rejects_the_whole_call(system: LegacyPostgres, legacy_db: str) -> None:
    good = event("2026/6")
    too_tall = event("2026/7", person=replace(PERSON, height=2.9))  # the legacy CHECK refuses
    with pytest.raises(LocalSystemRejected, match="height_cm"):
        system.write([good, too_tall])
    assert snapshot(legacy_db) == {}  # one transaction: the good one is not half-written


def test_missing_table_or_column_is_a_config_error(legacy_db: str) -> None:
    execute(legacy_db, "DROP TABLE wanted_person_nationality")
    with pytest.raises(ConfigError, match="wanted_person_nationality"):
        LegacyPostgres(database_url=legacy_db)
    with pytest.raises(ConfigError, match="'wanted_person' not found in schema 'interpol'"):
        LegacyPostgres(database_url=legacy_db, schema="interpol")
    execute(legacy_db, "ALTER TABLE wanted_person DROP COLUMN height_cm")
    with pytest.raises(ConfigError, match="lacks columns: height_cm"):
        LegacyPostgres(database_url=legacy_db)
    engine = sa.create_engine(legacy_db)
    tables = sa.inspect(engine).get_table_names()
    engine.dispose()
    assert sorted(tables) == ["wanted_person", "wanted_person_warrant"]  # nothing was created


def test_schema_option_qualifies_the_tables(new_postgres_db: Callable[[], str]) -> None:
    url = new_postgres_db()
    execute(url, "CREATE SCHEMA interpol", "SET search_path TO interpol", DDL)
    with pytest.raises(ConfigError, match="'wanted_person' not found in the default schema"):
        LegacyPostgres(database_url=url)
    legacy = LegacyPostgres(database_url=url, schema="interpol")
    legacy.write([event("2026/8")])
    legacy.withdraw([event("2026/9", 2, Action.CANCEL)])
    legacy.close()
    rows = snapshot(url, schema="interpol")
    assert {k: v["record_state"] for k, v in rows.items()} == {"2026/8": "A", "2026/9": "W"}


def test_loaded_by_its_entry_point_name(legacy_db: str) -> None:
    system = load_system("legacy-postgres", {"database_url": legacy_db})
    assert isinstance(system, LegacyPostgres) and system.health().ok
    system.close()


def test_behind_the_ledger_old_versions_are_ignored_and_cancels_stick(
    system: LegacyPostgres, legacy_db: str, tmp_path: Path
) -> None:
    sink = LedgerSink(system, ledger_url=f"sqlite:///{tmp_path}/ledger.db")

    def deliver(*events: NoticeEvent) -> None:
        for e in events:
            sink.add(e, partition=0)
            sink.flush()

    deliver(event("2026/10", 2, Action.UPDATE, person=THAI), event("2026/10", 1))
    row = snapshot(legacy_db)["2026/10"]
    assert (row["interpol_revision"], row["surname"]) == (2, "ศรีสุข")

    deliver(event("2026/10", 3, Action.CANCEL, reason="arrested"), event("2026/10", 2))
    # Even a higher version after the cancel does not bring the notice back.
    deliver(event("2026/10", 4, Action.UPDATE))
    deliver(event("2026/11", 5, Action.CANCEL), event("2026/11", 4, Action.UPDATE))
    rows = snapshot(legacy_db)
    assert (rows["2026/10"]["record_state"], rows["2026/10"]["interpol_revision"]) == ("W", 3)
    assert (rows["2026/10"]["surname"], rows["2026/10"]["withdrawn_reason"]) == ("ศรีสุข", "arrested")
    assert (rows["2026/11"]["record_state"], rows["2026/11"]["surname"]) == ("W", None)
    sink.close()


def test_unreachable_database_is_unavailable_not_fatal() -> None:
    system = LegacyPostgres(database_url=UNREACHABLE)  # may start while the database is down
    with pytest.raises(LocalSystemUnavailable):
        system.write([event("2026/12")])
    with pytest.raises(LocalSystemUnavailable):
        system.withdraw([event("2026/12", 2, Action.CANCEL)])
    health = system.health()
    assert not health.ok and "unavailable" in health.detail
    system.close()


def test_only_postgresql_is_accepted(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs PostgreSQL"):
        LegacyPostgres(database_url=f"sqlite:///{tmp_path}/country.db")


@pytest.mark.kafka
def test_end_to_end_over_kafka_into_the_legacy_schema(
    make_bus: Callable[..., Bus], legacy_db: str, tmp_path: Path
) -> None:
    bus = make_bus(["FR"])
    sink = LedgerSink(
        LegacyPostgres(database_url=legacy_db), ledger_url=f"sqlite:///{tmp_path}/ledger.db"
    )
    adapter = Adapter(bus.settings, {"FR": sink})
    bus.adapters["FR"] = adapter
    try:
        bus.hq.publish(
            [
                draft("2026/20", height=1.65),
                draft("2026/21", name="ศรีสุข", forename="สมชาย", nationalities=("TH",)),
                draft("2026/22"),
            ]
        )
        [update] = bus.hq.publish([draft("2026/20", height=1.72, weight=70.0)])
        cancel = bus.hq.cancel("2026/22", "arrested in Lyon")
        assert (update.version, cancel.version) == (2, 2)

        def recorded() -> bool:
            with bus.tracker.engine.connect() as conn:
                acks = conn.execute(
                    sa.select(ACK.c.notice_id, ACK.c.version).where(
                        ACK.c.country == "FR", ACK.c.status == "RECORDED"
                    )
                ).all()
            return {(a.notice_id, a.version) for a in acks} >= {
                ("2026/20", 1),
                ("2026/20", 2),
                ("2026/21", 1),
                ("2026/22", 1),
                ("2026/22", 2),
            }

        bus.pump(recorded)
    finally:
        adapter.close()

    rows = snapshot(legacy_db)
    assert set(rows) == {"2026/20", "2026/21", "2026/22"}
    a, b, c = rows["2026/20"], rows["2026/21"], rows["2026/22"]
    assert (a["record_state"], a["interpol_revision"], a["height_cm"]) == ("A", 2, 172)
    assert a["weight_kg"] == Decimal("70.0")
    assert (b["surname"], b["given_names"], b["nationalities"]) == ("ศรีสุข", "สมชาย", {"TH"})
    assert b["warrants"] == [(1, "RU", "Мошенничество", "Fraud")]
    assert (c["record_state"], c["interpol_revision"]) == ("W", 2)
    assert c["withdrawn_reason"] == "arrested in Lyon"


def test_unknown_lists_are_taken_in_and_an_unknown_nationality_has_no_row(
    system: LegacyPostgres, legacy_db: str
) -> None:
    """The legacy schema has no "unknown": no nationality row is how it says "none on record",
    for unknown as for none; it keeps no eyes, hair or languages at all."""
    unknown = replace(PERSON, nationalities=None, eyes_colors_id=None, languages_spoken_ids=None)
    system.write([event("2026/1"), event("2026/2", person=unknown)])
    system.write([event("2026/1", 2, person=unknown)])  # known, then unknown: no row left
    rows = snapshot(legacy_db)
    assert (rows["2026/1"]["nationalities"], rows["2026/1"]["interpol_revision"]) == (set(), 2)
    assert rows["2026/2"]["nationalities"] == set()
    assert rows["2026/2"]["surname"] == "Иванов" and rows["2026/2"]["warrants"]


def test_entries_list_revisions_and_states_and_a_forced_cancel_mends_a_resurrected_record(
    system: LegacyPostgres, legacy_db: str, tmp_path: Path
) -> None:
    from notice_bus.wire.digest import Entry

    sink = LedgerSink(system, ledger_url=f"sqlite:///{tmp_path}/ledger.db")
    for e in (event("2026/20", 2, Action.UPDATE, person=THAI), event("2026/21", 1)):
        sink.add(e, 0)
    sink.add(event("2026/22", 3, Action.CANCEL, reason="arrested"), 0)
    sink.flush()
    assert sink.content_listed is False
    assert sorted(sink.entries() or ()) == [
        Entry("2026/20", 2, "ACTIVE", ""),
        Entry("2026/21", 1, "ACTIVE", ""),
        Entry("2026/22", 3, "WITHDRAWN", ""),
    ]
    # Behind the adapter's back: 2026/22 set back to active, 2026/21 deleted.
    execute(
        legacy_db,
        "UPDATE wanted_person SET record_state = 'A', surname = 'X' WHERE wp_ref = '2026/22'",
        "DELETE FROM wanted_person WHERE wp_ref = '2026/21'",
    )
    # The ledger says both were taken in: an ordinary flush changes nothing, force does.
    sink.add(event("2026/21", 1), 0)
    sink.flush()
    assert "2026/21" not in snapshot(legacy_db)
    sink.force([event("2026/21", 1), event("2026/22", 3, Action.CANCEL, reason="arrested")])
    rows = snapshot(legacy_db)
    assert (rows["2026/21"]["record_state"], rows["2026/21"]["surname"]) == ("A", "Иванов")
    assert (rows["2026/22"]["record_state"], rows["2026/22"]["withdrawn_reason"]) == (
        "W",
        "arrested",
    )
    sink.close()
