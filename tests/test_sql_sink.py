"""The default local system's bulk writes, on SQLite and on a real PostgreSQL (where a batch of
200 or more goes through COPY into a temporary table and one upsert from it)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa

from notice_bus.bureau.sinks.sql import SqlSink
from notice_bus.bureau.sinks.tables import RED_NOTICE
from notice_bus.wire.model import Action, NoticeEvent
from tests.factories import PERSON, event


def write(sink: SqlSink, events: Sequence[NoticeEvent]) -> None:
    for e in events:
        sink.add(e, 0)
    sink.flush()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_bulk_batches_keep_the_highest_version_and_withdrawn_stays_withdrawn(
    backend: str, tmp_path: Path, new_postgres_db: Callable[[], str]
) -> None:
    url = new_postgres_db() if backend == "postgresql" else f"sqlite:///{tmp_path}/bulk.db"
    sink = SqlSink(url)
    ids = [f"2026/{n}" for n in range(300)]
    try:
        write(sink, [event(i, 2) for i in ids])
        write(
            sink,
            [event(i, 1) for i in ids[:50]]  # stale: no change
            + [event(i, 3, Action.UPDATE, person=replace(PERSON, weight=99.0)) for i in ids[50:100]]
            + [event(i, 3, Action.CANCEL, reason="arrested") for i in ids[100:]],  # 200 cancels
        )
        write(sink, [event(i, 4, Action.UPDATE) for i in ids[100:]])  # after the cancel: ignored
        with sink.engine.connect() as conn:
            rows = {r.notice_id: r for r in conn.execute(sa.select(RED_NOTICE))}
    finally:
        sink.close()
    assert len(rows) == 300
    assert {(r.version, r.status) for i, r in rows.items() if i in ids[:50]} == {(2, "ACTIVE")}
    assert {(r.version, r.weight) for i, r in rows.items() if i in ids[50:100]} == {(3, 99.0)}
    withdrawn = {
        (r.version, r.status, r.withdrawn_reason) for i, r in rows.items() if i in ids[100:]
    }
    assert withdrawn == {(3, "WITHDRAWN", "arrested")}
    first = rows[ids[0]]
    assert first.nationalities == ["RU"] and first.arrest_warrants[0]["issuing_country_id"] == "RU"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize("batch", [1, 250])  # an executemany, and COPY on PostgreSQL
def test_an_unknown_list_is_stored_as_sql_null_and_an_empty_one_as_empty(
    backend: str, batch: int, tmp_path: Path, new_postgres_db: Callable[[], str]
) -> None:
    url = new_postgres_db() if backend == "postgresql" else f"sqlite:///{tmp_path}/null.db"
    unknown = replace(PERSON, eyes_colors_id=None, nationalities=None, languages_spoken_ids=())
    sink = SqlSink(url)
    try:
        write(sink, [event(f"2026/{n}", person=unknown) for n in range(batch)])
        with sink.engine.connect() as conn:
            rows = conn.execute(sa.select(RED_NOTICE)).all()
            nulls = conn.execute(
                sa.select(sa.func.count()).where(
                    RED_NOTICE.c.eyes_colors_id.is_(None), RED_NOTICE.c.nationalities.is_(None)
                )
            ).scalar_one()
    finally:
        sink.close()
    assert len(rows) == batch and nulls == batch  # SQL NULL, which IS NULL finds
    assert {(r.eyes_colors_id, r.nationalities, tuple(r.languages_spoken_ids)) for r in rows} == {
        (None, None, ())
    }
    assert {tuple(r.hairs_id) for r in rows} == {()}  # known to be none, as before
