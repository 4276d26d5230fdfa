"""The ordering property, proven with hypothesis: for any notice, under any interleaving of
duplicates, replays and redeliveries, cut into batches anyhow, the local state ends at the
highest version, and a cancel is never undone by a stale update.

It is checked on the write path (our table on SQLite and PostgreSQL, and a plug-in behind the
version ledger), and on the real broker for a sample.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notice_bus.bureau.sinks.local_system import LedgerSink, LocalSystem
from notice_bus.bureau.sinks.sink import Sink
from notice_bus.bureau.sinks.sql import SqlSink
from notice_bus.bureau.sinks.tables import RED_NOTICE
from notice_bus.wire.model import Action, NoticeEvent
from tests.factories import event


@dataclass(frozen=True)
class History:
    """Each notice's versions as HQ published them; the last may be a cancel."""

    versions: dict[str, int]
    cancelled: frozenset[str]

    def events(self) -> list[NoticeEvent]:
        out = []
        for notice_id, last in self.versions.items():
            for v in range(1, last + 1):
                if v == last and notice_id in self.cancelled:
                    out.append(event(notice_id, v, Action.CANCEL))
                else:
                    action = Action.PUBLISH if v == 1 else Action.UPDATE
                    out.append(event(notice_id, v, action, person=_person(v)))
        return out

    def expected(self) -> dict[str, tuple[int, str]]:
        return {
            n: (v, "WITHDRAWN" if n in self.cancelled else "ACTIVE")
            for n, v in self.versions.items()
        }


def _person(version: int) -> object:
    from dataclasses import replace

    from tests.factories import PERSON

    return replace(PERSON, weight=50.0 + version)  # each version's content differs


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[History, list[list[NoticeEvent]]]:
    """A history, then a delivery: every event at least once, in any order, with duplicates,
    cut into batches."""
    ids = draw(st.lists(st.integers(1, 9999), min_size=1, max_size=3, unique=True))
    tag = uuid.uuid4().int % 9000 + 1000  # keeps examples apart in a shared database
    versions = {f"{tag}/{i}": draw(st.integers(1, 5)) for i in ids}
    cancelled = frozenset(n for n in versions if draw(st.booleans()))
    history = History(versions, cancelled)
    events = history.events()
    extra = draw(st.lists(st.sampled_from(events), max_size=len(events) * 2))
    stream = draw(st.permutations(events + extra))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=4)))
    batches = [list(stream[a:b]) for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    return history, [b for b in batches if b]


def apply(sink: Sink, batches: Sequence[Sequence[NoticeEvent]]) -> None:
    for batch in batches:
        for e in batch:
            sink.add(e, partition=0)
        sink.flush()


def table_state(engine: sa.Engine, ids: Sequence[str]) -> dict[str, tuple[int, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(RED_NOTICE.c.notice_id, RED_NOTICE.c.version, RED_NOTICE.c.status).where(
                RED_NOTICE.c.notice_id.in_(ids)
            )
        ).all()
    return {r.notice_id: (r.version, r.status) for r in rows}


@settings(max_examples=150, deadline=None)
@given(deliveries())
def test_sql_sink_on_sqlite(case: tuple[History, list[list[NoticeEvent]]]) -> None:
    history, batches = case
    with tempfile.TemporaryDirectory() as tmp:
        sink = SqlSink(f"sqlite:///{Path(tmp) / 'c.db'}")
        apply(sink, batches)
        assert table_state(sink.engine, list(history.versions)) == history.expected()
        weights = {
            r.notice_id: r.weight for r in sink.engine.connect().execute(sa.select(RED_NOTICE))
        }
        sink.close()
    for notice_id, (version, _) in history.expected().items():
        if notice_id not in history.cancelled:
            assert weights[notice_id] == 50.0 + version  # the content of the highest version


@pytest.mark.postgres
def test_sql_sink_on_postgres(new_postgres_db: Callable[[], str]) -> None:
    sink = SqlSink(new_postgres_db())

    @settings(
        max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(deliveries())
    def check(case: tuple[History, list[list[NoticeEvent]]]) -> None:
        history, batches = case
        apply(sink, batches)
        assert table_state(sink.engine, list(history.versions)) == history.expected()

    try:
        check()
    finally:
        sink.close()


class Recorder(LocalSystem):
    """Records what a plug-in is handed, to check the ledger's guarantees on their own."""

    def __init__(self) -> None:
        self.state: dict[str, tuple[int, str]] = {}
        self.regressions: list[str] = []

    def write(self, notices: Sequence[NoticeEvent]) -> None:
        for e in notices:
            self._take(e, "ACTIVE")

    def withdraw(self, cancels: Sequence[NoticeEvent]) -> None:
        for e in cancels:
            self._take(e, "WITHDRAWN")

    def _take(self, e: NoticeEvent, status: str) -> None:
        held = self.state.get(e.notice_id)
        if held and (held[0] > e.version or held[1] == "WITHDRAWN"):
            self.regressions.append(f"{e.notice_id} v{e.version} after {held}")
        self.state[e.notice_id] = (e.version, status)


@settings(max_examples=150, deadline=None)
@given(deliveries())
def test_ledger_never_hands_a_plugin_an_older_version(
    case: tuple[History, list[list[NoticeEvent]]],
) -> None:
    history, batches = case
    with tempfile.TemporaryDirectory() as tmp:
        system = Recorder()
        sink = LedgerSink(system, f"sqlite:///{Path(tmp) / 'ledger.db'}")
        apply(sink, batches)
        sink.close()
    assert system.regressions == []
    assert system.state == history.expected()


@pytest.mark.kafka
def test_shuffled_redeliveries_through_the_real_broker(
    make_bus: Callable[..., object], tmp_path: Path
) -> None:
    import random

    from tests.conftest import Bus
    from tests.test_end_to_end import send_raw

    rng = random.Random(3)
    history = History(
        versions={f"2026/{i}": rng.randint(1, 5) for i in range(1, 41)},
        cancelled=frozenset(f"2026/{i}" for i in range(1, 41) if rng.random() < 0.3),
    )
    events = history.events()
    stream = events + rng.choices(events, k=len(events))
    rng.shuffle(stream)
    bus = make_bus(["FR"])
    assert isinstance(bus, Bus)
    url = f"sqlite:///{tmp_path}/fr.db"
    bus.adapter("FR", url)
    send_raw(bus.settings, "FR", stream)
    engine = sa.create_engine(url)
    bus.pump(lambda: table_state(engine, list(history.versions)) == history.expected())
    engine.dispose()
