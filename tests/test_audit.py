"""HQ's hash-chained audit trail, on SQLite and PostgreSQL: appends verify, an edit, a removal
or a changed time is found at the entry it broke, concurrent appends stay one chain."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from notice_bus.hq import audit
from notice_bus.hq.audit import GENESIS, Kind
from notice_bus.hq.tables import HQ_TABLES
from notice_bus.runtime.db import make_engine, transaction

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def kafka_bootstrap() -> str:
    """``hq_url`` comes with Settings, which name a broker: these tests never talk to one."""
    return "localhost:9"


@pytest.fixture
def engine(hq_url: str) -> Iterator[Engine]:
    engine = make_engine(hq_url, HQ_TABLES)
    yield engine
    engine.dispose()


def add(engine: Engine, n: int) -> list[audit.Entry]:
    """``n`` requests, each appended in its own transaction, about notices N0, N1, N2 in turn."""
    out = []
    for i in range(n):
        with transaction(engine) as conn:
            detail = {"i": i, "why": "écrit", "tags": ["a", None, True], "n": {"x": -1}}
            entry = audit.append(
                conn,
                kind=Kind.REQUEST,
                actor="bureau:FR",
                at=T0 + timedelta(seconds=i),
                detail=detail,
                request_id=f"r{i}",
                notice_id=f"N{i % 3}",
            )
        out.append(entry)
    return out


def test_appends_verify(engine: Engine) -> None:
    assert audit.verify(engine) == audit.ChainCheck(0, True, None, "", GENESIS)
    assert audit.latest(engine) is None
    made = add(engine, 12)
    assert [e.seq for e in made] == list(range(1, 13))
    assert made[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in pairwise(made))
    check = audit.verify(engine)
    assert check == audit.ChainCheck(12, True, None, "", made[-1].hash)
    assert audit.latest(engine) == made[-1]
    # What was read back hashes as what was written (naive SQLite times taken as UTC).
    assert audit.entries_of_request(engine, "r4") == [made[4]]


def test_verify_reads_in_pages(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "_PAGE", 4)
    add(engine, 9)
    assert audit.verify(engine).entries == 9
    with transaction(engine) as conn:
        conn.execute(sa.text("DELETE FROM hq_audit WHERE seq = 5"))
    assert audit.verify(engine).problem == "entry 6: follows entry 4 (entry 5 removed?)"


def test_edited_detail(engine: Engine) -> None:
    add(engine, 10)
    with transaction(engine) as conn:
        conn.execute(sa.text("UPDATE hq_audit SET detail = :d WHERE seq = 7"), {"d": '{"i": 666}'})
    check = audit.verify(engine)
    assert (check.ok, check.broken_at, check.entries) == (False, 7, 6)
    assert check.problem == "entry 7: its hash does not match its content (edited?)"


def test_edit_with_recomputed_hash_breaks_the_next_link(engine: Engine) -> None:
    made = add(engine, 10)
    e = made[6]
    forged = audit.entry_hash(
        e.prev_hash, e.seq, e.at, e.kind, e.actor, e.request_id, e.notice_id, {"i": 0}
    )
    with transaction(engine) as conn:
        conn.execute(
            sa.text("UPDATE hq_audit SET detail = :d, hash = :h WHERE seq = 7"),
            {"d": '{"i": 0}', "h": forged},
        )
    check = audit.verify(engine)
    assert check.broken_at == 8
    assert check.problem == "entry 8: prev_hash is not entry 7's hash"


def test_deleted_entry(engine: Engine) -> None:
    add(engine, 10)
    with transaction(engine) as conn:
        conn.execute(sa.text("DELETE FROM hq_audit WHERE seq = 7"))
    check = audit.verify(engine)
    assert (check.ok, check.broken_at) == (False, 8)
    assert check.problem == "entry 8: follows entry 6 (entry 7 removed?)"


def test_deleted_first_entries(engine: Engine) -> None:
    add(engine, 4)
    with transaction(engine) as conn:
        conn.execute(sa.text("DELETE FROM hq_audit WHERE seq <= 2"))
    check = audit.verify(engine)
    assert check.problem == "entry 3: comes first (entries 1 to 2 removed?)"


def test_changed_time(engine: Engine) -> None:
    add(engine, 10)
    with transaction(engine) as conn:
        conn.execute(
            sa.text("UPDATE hq_audit SET at = :at WHERE seq = 3"),
            {"at": T0 + timedelta(days=1)},
        )
    check = audit.verify(engine)
    assert (check.ok, check.broken_at) == (False, 3)
    assert "its hash does not match" in check.problem


def test_reordered_entries(engine: Engine) -> None:
    add(engine, 5)
    with transaction(engine) as conn:
        conn.execute(sa.text("UPDATE hq_audit SET seq = 100 WHERE seq = 2"))
        conn.execute(sa.text("UPDATE hq_audit SET seq = 2 WHERE seq = 3"))
        conn.execute(sa.text("UPDATE hq_audit SET seq = 3 WHERE seq = 100"))
    check = audit.verify(engine)
    assert (check.ok, check.broken_at) == (False, 2)


def test_story_of_a_notice(engine: Engine) -> None:
    made = add(engine, 9)
    with transaction(engine) as conn:
        audit.append(
            conn,
            kind=Kind.DECISION,
            actor="reviewer:ana",
            at=datetime(2024, 5, 2, 14, 0, tzinfo=timezone(timedelta(hours=2))),
            detail={"decision": "APPROVED", "reason": "facts suffice"},
            request_id="r1",
            notice_id="N1",
        )
    story = audit.story(engine, "N1")
    assert [e.seq for e in story] == [2, 5, 8, 10]
    assert story[:3] == [made[1], made[4], made[7]]
    decision = story[-1]
    assert (decision.kind, decision.actor) == ("DECISION", "reviewer:ana")
    assert decision.at == datetime(2024, 5, 2, 12, 0, tzinfo=UTC)
    assert decision.detail == {"decision": "APPROVED", "reason": "facts suffice"}
    assert [e.seq for e in audit.entries_of_request(engine, "r1")] == [2, 10]
    assert audit.story(engine, "NONE") == []
    assert audit.verify(engine).ok


def test_rolled_back_append_leaves_no_entry(engine: Engine) -> None:
    add(engine, 2)
    with pytest.raises(RuntimeError), transaction(engine) as conn:
        audit.append(conn, kind=Kind.FINDING, actor="screening", at=T0, detail={})
        raise RuntimeError("what the entry recorded failed")
    made = add(engine, 1)
    assert made[0].seq == 3
    assert audit.verify(engine).entries == 3


@pytest.mark.parametrize(
    "detail",
    [{"score": 0.5}, {"a": [1, {"b": 2.0}]}, {"when": T0}, {"t": (1, 2)}, {1: "x"}, {"s": {1}}],
)
def test_non_json_detail_is_refused(engine: Engine, detail: dict[str, object]) -> None:
    with pytest.raises(TypeError), transaction(engine) as conn:
        audit.append(conn, kind=Kind.FINDING, actor="screening", at=T0, detail=detail)
    assert audit.verify(engine).entries == 0


def test_concurrent_appends_make_one_chain(engine: Engine) -> None:
    threads, each = 2, 25
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(actor: str) -> None:
        try:
            start.wait()
            for i in range(each):
                with transaction(engine) as conn:
                    audit.append(
                        conn,
                        kind=Kind.PUBLICATION,
                        actor=actor,
                        at=datetime.now(UTC),
                        detail={"i": i},
                    )
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(f"hq-{t}",)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert not errors
    check = audit.verify(engine)
    assert (check.ok, check.entries, check.problem) == (True, threads * each, "")
    with engine.connect() as conn:
        actors = conn.execute(sa.text("SELECT actor FROM hq_audit")).scalars().all()
    assert sorted(set(actors)) == ["hq-0", "hq-1"]
