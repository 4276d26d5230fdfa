"""The tracker's outcome columns, kept by ``reconcile.store``, on SQLite and PostgreSQL (the two
load the stage differently)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from notice_bus.db import as_utc, make_engine
from notice_bus.reconcile import Row, store
from notice_bus.tables import SENT, TRACKER_TABLES

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
