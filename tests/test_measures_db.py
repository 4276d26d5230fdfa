"""The tracker's outcome columns, kept by ``reconcile``, on SQLite and PostgreSQL (the two
send their keys differently)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from notice_bus.db import as_utc, make_engine
from notice_bus.reconcile import reconcile
from notice_bus.tables import ACK, RESPONSE, SENT, TRACKER_TABLES

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def sent(cc: str, nid: str, version: int, s: float) -> dict[str, Any]:
    return dict(
        country=cc, notice_id=nid, version=version, action="PUBLISH",
        published_at=at(s), broker_at=at(s), partition=0, offset=version,
    )  # fmt: skip


def ack(cc: str, nid: str, version: int, status: str, s: float, pos: str = "") -> dict[str, Any]:
    return dict(
        country=cc, notice_id=nid, version=version, status=status, position=pos,
        at=at(s), broker_at=at(s), adapter_id="test",
    )  # fmt: skip


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
        early = [ack("FR", "2026/1", 1, "RECEIVED", 5), ack("FR", "2026/1", 1, "RECORDED", 6)]
        conn.execute(sa.insert(ACK), early)
        reconcile(conn, early, [], [])
        conn.execute(sa.insert(SENT), [sent("FR", "2026/1", 1, 1), sent("DE", "2026/1", 1, 1)])
        reconcile(conn, [], [("FR", "2026/1", 1), ("DE", "2026/1", 1)], [("FR", "2026/1")])
        # Then v2 and a rejection of it; DE answers.
        conn.execute(sa.insert(SENT), [sent("FR", "2026/1", 2, 10)])
        refused = [ack("FR", "2026/1", 2, "REJECTED", 11, "0:2")]
        conn.execute(sa.insert(ACK), refused)
        conn.execute(
            sa.insert(RESPONSE),
            [dict(country="DE", notice_id="2026/1", answer="NO_TRACE", responder="x",
                  at=at(20), broker_at=at(20))],
        )  # fmt: skip
        reconcile(conn, refused, [("FR", "2026/1", 2)], [("FR", "2026/1"), ("DE", "2026/1")])
    v1, v2 = outcome(engine, "FR", "2026/1", 1), outcome(engine, "FR", "2026/1", 2)
    assert (v1["received_at"], v1["recorded_at"], v1["first_at"]) == (at(5), at(6), at(1))
    assert v1["superseded"] and not v1["rejected"]
    assert v2["rejected"] and not v2["superseded"] and v2["recorded_at"] is None
    de = outcome(engine, "DE", "2026/1", 1)
    assert de["answered_at"] == at(20) and de["recorded_at"] is None


def test_acks_of_known_versions_keep_the_earliest_time(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.insert(SENT), [sent("FR", "2026/2", 1, 1), sent("FR", "2026/3", 1, 1)])
        reconcile(conn, [], [("FR", "2026/2", 1), ("FR", "2026/3", 1)], [("FR", "2026/2")])
        reconcile(conn, [ack("FR", "2026/2", 1, "RECORDED", 8)], [], [])
        # A replay, and the RECEIVED a later RECORDED stands for, dated before it.
        later = [
            ack("FR", "2026/2", 1, "RECORDED", 9),
            ack("FR", "2026/2", 1, "RECORDED", 7),
            ack("FR", "2026/2", 1, "RECEIVED", 4),
            ack("FR", "2026/3", 1, "REJECTED", 5, "0:7"),
        ]
        reconcile(conn, later, [], [])
    two, three = outcome(engine, "FR", "2026/2", 1), outcome(engine, "FR", "2026/3", 1)
    assert (two["received_at"], two["recorded_at"], two["rejected"]) == (at(4), at(7), False)
    assert three["rejected"] and three["recorded_at"] is None
