"""The tracker's outcome columns, kept by ``reconcile.store``, on SQLite and PostgreSQL (the two
load the stage differently)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from notice_bus.reports.formats import to_csv, to_json, to_table
from notice_bus.reports.html import render_html
from notice_bus.reports.report import Status, build_report
from notice_bus.runtime.db import as_utc, make_engine
from notice_bus.runtime.settings import Settings
from notice_bus.tracker.reconcile import Row, store
from notice_bus.tracker.tables import SENT, TRACKER_TABLES

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def sent(cc: str, nid: str, version: int, s: float) -> Row:
    return (cc, nid, version, "PUBLISH", at(s), at(s), 0, version)


def ack(cc: str, nid: str, version: int, status: str, s: float, pos: str = "") -> Row:
    return (cc, nid, version, status, pos, at(s), at(s), "test", None)


def answer(cc: str, nid: str, s: float) -> Row:
    return (cc, nid, "NO_TRACE", None, "x", at(s), at(s))


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(
    request: pytest.FixtureRequest, tmp_path: Path, new_postgres_db: Callable[[], str]
) -> sa.Engine:
    url = f"sqlite:///{tmp_path}/t.db" if request.param == "sqlite" else new_postgres_db()
    made = make_engine(url, TRACKER_TABLES)
    request.addfinalizer(made.dispose)
    return made


def outcome(engine: sa.Engine, cc: str, nid: str, version: int) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(SENT).where(
                SENT.c.country == cc, SENT.c.notice_id == nid, SENT.c.version == version
            )
        ).one()
    out = dict(row._mapping)
    for k in ("received_at", "recorded_at", "first_at", "answered_at"):
        out[k] = as_utc(out[k]) if out[k] is not None else None
    return out


def test_outcomes_whichever_arrives_first(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        # FR: acks of v1 came in a batch before the notice itself was read.
        store(
            conn,
            acks=[ack("FR", "2026/1", 1, "RECEIVED", 5), ack("FR", "2026/1", 1, "RECORDED", 6)],
        )
        store(conn, notices=[sent("FR", "2026/1", 1, 1), sent("DE", "2026/1", 1, 1)])
        # Then v2 and a rejection of it; DE answers.
        store(
            conn,
            notices=[sent("FR", "2026/1", 2, 10)],
            acks=[ack("FR", "2026/1", 2, "REJECTED", 11, "0:2")],
            responses=[answer("DE", "2026/1", 20)],
        )
    v1, v2 = outcome(engine, "FR", "2026/1", 1), outcome(engine, "FR", "2026/1", 2)
    assert (v1["received_at"], v1["recorded_at"], v1["first_at"]) == (at(5), at(6), at(1))
    assert v1["superseded"] and not v1["rejected"]
    assert v2["rejected"] and not v2["superseded"] and v2["recorded_at"] is None
    assert v2["first_at"] == at(1)
    de = outcome(engine, "DE", "2026/1", 1)
    assert de["answered_at"] == at(20) and de["recorded_at"] is None


def test_acks_of_known_versions_keep_the_earliest_time(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        store(conn, notices=[sent("FR", "2026/2", 1, 1), sent("FR", "2026/3", 1, 1)])
        store(conn, acks=[ack("FR", "2026/2", 1, "RECORDED", 8)])
        # A replay, and the RECEIVED a later RECORDED stands for, dated before it.
        store(
            conn,
            acks=[
                ack("FR", "2026/2", 1, "RECORDED", 9),
                ack("FR", "2026/2", 1, "RECORDED", 7),
                ack("FR", "2026/2", 1, "RECEIVED", 4),
                ack("FR", "2026/3", 1, "REJECTED", 5, "0:7"),
            ],
        )
    two, three = outcome(engine, "FR", "2026/2", 1), outcome(engine, "FR", "2026/3", 1)
    assert (two["received_at"], two["recorded_at"], two["rejected"]) == (at(4), at(7), False)
    assert three["rejected"] and three["recorded_at"] is None
    assert stored(engine, "tracker_ack") == 3  # one row per status: replays are not stored


def test_one_batch_holding_versions_their_acks_answers_and_replays(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        store(
            conn,
            notices=[sent("FR", "2026/4", 2, 12), sent("FR", "2026/4", 1, 10)] * 2,
            acks=[ack("FR", "2026/4", 1, "RECORDED", 11), ack("FR", "2026/4", 2, "RECEIVED", 13)]
            * 2,
            responses=[answer("FR", "2026/4", 25), answer("FR", "2026/4", 26)],
        )
        # A version that reached the country before the one stored first (a replay from
        # another partition's point of view): the notice's first arrival moves back.
        store(conn, notices=[sent("FR", "2026/4", 3, 5)])
    v1, v2, v3 = (outcome(engine, "FR", "2026/4", v) for v in (1, 2, 3))
    assert v1["recorded_at"] == at(11) and v1["superseded"]
    assert v2["received_at"] == at(13) and v2["recorded_at"] is None and v2["superseded"]
    assert not v3["superseded"]
    assert {v["first_at"] for v in (v1, v2, v3)} == {at(5)}
    assert {v["answered_at"] for v in (v1, v2, v3)} == {at(25)}
    assert stored(engine, "tracker_sent") == 3 and stored(engine, "tracker_ack") == 2
    assert stored(engine, "tracker_response") == 1  # one answer of each kind is kept


def stored(engine: sa.Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


def tracked_run(engine: sa.Engine) -> None:
    """FR recorded one notice 5 s after it arrived and still owes another; DE answered one."""
    with engine.begin() as conn:
        store(
            conn,
            notices=[
                sent("FR", "2026/1", 1, 1),
                sent("FR", "2026/2", 1, 2),
                sent("DE", "2026/1", 1, 1),
            ],
            acks=[
                ack("FR", "2026/1", 1, "RECEIVED", 3),
                ack("FR", "2026/1", 1, "RECORDED", 6),
                ack("DE", "2026/1", 1, "RECORDED", 4),
            ],
            responses=[answer("DE", "2026/1", 20)],
        )


@pytest.fixture
def pg_engine(new_postgres_db: Callable[[], str]) -> Iterator[sa.Engine]:
    made = make_engine(new_postgres_db(), TRACKER_TABLES)
    yield made
    made.dispose()


def test_every_report_format_on_postgresql(pg_engine: sa.Engine) -> None:
    """The figures are plain floats (PostgreSQL's extract() gives Decimal), so every format
    renders them; SQLite's are floats anyway (test_cli, test_report_html)."""
    tracked_run(pg_engine)
    settings = Settings(lag_threshold_s=60, down_after_s=600)
    reports = build_report(pg_engine, settings, clock=lambda: at(32))
    rows = {r["country"]: r for r in json.loads(to_json(reports))}
    assert (rows["FR"]["max_lag_s"], rows["FR"]["outstanding"]) == (5.0, 1)
    assert rows["FR"]["outstanding_notices"] == [
        {"notice_id": "2026/2", "version": 1, "age_s": 30.0}
    ]
    assert rows["DE"]["response_p95_s"] == 19.0
    by_csv = {r["country"]: r for r in csv.DictReader(io.StringIO(to_csv(reports)))}
    assert (by_csv["FR"]["max_lag_s"], by_csv["FR"]["outstanding_notices"]) == ("5.0", "2026/2v1")
    table = to_table(reports).splitlines()
    assert table[0].startswith("COUNTRY")
    assert {line.split()[0] for line in table[1:]} == {"FR", "DE"}
    page = render_html(pg_engine, settings, reports, clock=lambda: at(32))
    assert '<tr data-country="FR"' in page and '<tr data-country="DE"' in page

    fr = next(r for r in reports if r.country == "FR")
    figures = (fr.p50_lag_s, fr.p95_lag_s, fr.max_lag_s, fr.delivery_p95_s)
    assert all(type(v) is float for v in figures), figures  # for whoever reads them in Python
    assert fr.max_lag_s == pytest.approx(5.0, abs=1e-3)
    assert fr.delivery_p95_s == pytest.approx(2.0, abs=1e-3)


def test_a_country_with_a_notice_past_its_record_deadline_is_not_ok(
    engine: sa.Engine, tmp_path: Path
) -> None:
    tracked_run(engine)
    # FR's notice 2026/2 has waited 30 s: under the lag threshold, over FR's own deadline.
    policy = tmp_path / "policy.toml"
    policy.write_text("[countries.FR]\nrecord_within_s = 20\n")
    loose = Settings(lag_threshold_s=60, down_after_s=600)
    strict = loose.with_(policy_file=str(policy))
    status = {r.country: r.status for r in build_report(engine, loose, clock=lambda: at(32))}
    assert status == {"FR": Status.OK, "DE": Status.OK}
    status = {r.country: r.status for r in build_report(engine, strict, clock=lambda: at(32))}
    assert status == {"FR": Status.LAGGING, "DE": Status.OK}
