"""Copy verification, the bureau's side, on the real broker with SQLite and PostgreSQL.

HQ's side is played here: database A is a fresh, correct copy (a real adapter wrote it), its
digest is the manifest, and a responder thread answers the checker's queries with A's entries.
Database B, written by a second adapter (another group), is the copy damaged and checked."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from notice_bus.bureau.adapter import Adapter
from notice_bus.bureau.copies import CopyChecker, classify
from notice_bus.bureau.sinks.sink import Sink
from notice_bus.bureau.sinks.sql import SqlSink
from notice_bus.bureau.sinks.tables import RED_NOTICE
from notice_bus.runtime.settings import Settings
from notice_bus.wire.codec import AvroCodec, load_schema
from notice_bus.wire.digest import Digest, Entry, bucket_of
from notice_bus.wire.manifest import (
    ALTERED,
    CHECK,
    DETAILS,
    EXTRA,
    MANIFEST,
    MISSING,
    QUERY,
    RESURRECTED,
    STALE,
    CopyCheck,
    CopyStatus,
    Manifest,
    ManifestDetails,
    ManifestQuery,
    kind_header,
    kind_of,
)
from notice_bus.wire.schema_registry import KafkaSchemaStore
from notice_bus.wire.topics import TopicNames, init_topics
from tests.conftest import Bus
from tests.factories import draft, event, local_rows

pytestmark = pytest.mark.kafka


def codec(settings: Settings, name: str) -> AvroCodec:
    return AvroCodec(load_schema(name), KafkaSchemaStore(settings))


def manifest_of(sink: Sink, country: str = "FR") -> tuple[Manifest, dict[str, Entry]]:
    listing = sink.entries()
    assert listing is not None
    entries = {e.notice_id: e for e in listing}
    digest = Digest(entries.values())
    return Manifest(country, digest.count, digest.to_bytes()), entries


class PlayedHQ:
    """HQ's side of a check: publishes manifests, answers queries with ``entries``."""

    def __init__(self, settings: Settings, entries: dict[str, Entry]) -> None:
        self.settings, self.entries = settings, entries
        self.names = TopicNames(settings.topic_prefix)
        self.producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
        self.queries: list[ManifestQuery] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._answer, daemon=True)
        self.thread.start()

    def publish(self, manifest: Manifest) -> None:
        value = codec(self.settings, "manifest").encode(manifest.to_avro())
        topic = self.names.manifests(manifest.country)
        self.producer.send(topic, key=b"FR", value=value, headers=kind_header(MANIFEST)).get(30)

    def _answer(self) -> None:
        consumer = KafkaConsumer(bootstrap_servers=self.settings.bootstrap_servers)
        consumer.assign([TopicPartition(self.names.requests("FR"), 0)])
        queries, details = (
            codec(self.settings, "manifest_query"),
            codec(self.settings, "manifest_details"),
        )
        try:
            while not self.stop.is_set():
                for records in consumer.poll(timeout_ms=100).values():
                    for r in records:
                        if kind_of(r.headers) != QUERY:
                            continue
                        q = ManifestQuery.from_avro(queries.decode(r.value))
                        self.queries.append(q)
                        for b in q.buckets:
                            mine = tuple(
                                e for e in self.entries.values() if bucket_of(e.notice_id) == b
                            )
                            answer = ManifestDetails(q.manifest_id, "FR", b, mine)
                            self.producer.send(
                                self.names.manifests("FR"),
                                key=q.manifest_id.encode(),
                                value=details.encode(answer.to_avro()),
                                headers=kind_header(DETAILS),
                            )
                        self.producer.flush()
        finally:
            consumer.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.producer.close()


def copy_checks(settings: Settings) -> list[CopyCheck]:
    topic = TopicNames(settings.topic_prefix).acks("FR")
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    decode = codec(settings, "copy_check").decode
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        out = []
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            for records in consumer.poll(timeout_ms=200).values():
                out += [
                    CopyCheck.from_avro(decode(r.value))
                    for r in records
                    if kind_of(r.headers) == CHECK
                ]
        return out
    finally:
        consumer.close()


@pytest.fixture(params=["sqlite", "postgres"])
def two_copies(
    request: pytest.FixtureRequest, make_bus: Callable[..., Bus], tmp_path: Path
) -> Iterator[tuple[Bus, str, str]]:
    """A bus with FR's notices in two databases: A, the reference, and B, to damage."""
    if request.param == "sqlite":
        a, b = f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db"
    else:
        make: Callable[[], str] = request.getfixturevalue("new_postgres_db")
        a, b = make(), make()
    bus = make_bus(["FR"])
    bus.adapter("FR", a)
    second = Adapter(bus.settings, {"FR": SqlSink(b)}, hub="copy-b")
    bus.adapters["FR-B"] = second
    bus._closers.append(second.close)
    bus.hq.publish([draft(f"2026/{n}") for n in range(1, 9)])
    bus.hq.publish([draft("2026/2", weight=81.5)])
    bus.hq.cancel("2026/3", "arrested")
    bus.hq.cancel("2026/4", "arrested")

    def written() -> bool:
        return all(
            len(r) == 8 and r["2026/2"].version == 2 and r["2026/4"].status == "WITHDRAWN"
            for r in (local_rows(a), local_rows(b))
        )

    bus.pump(written)
    yield bus, a, b


def damage(url: str) -> None:
    engine = sa.create_engine(url)
    t = RED_NOTICE
    with engine.begin() as conn:
        conn.execute(sa.delete(t).where(t.c.notice_id == "2026/1"))  # missing
        conn.execute(sa.update(t).where(t.c.notice_id == "2026/2").values(version=1))  # stale
        conn.execute(  # resurrected: a cancelled notice set back to active
            sa.update(t)
            .where(t.c.notice_id == "2026/3")
            .values(status="ACTIVE", withdrawn_reason=None, name="Иванов")
        )
        conn.execute(sa.update(t).where(t.c.notice_id == "2026/5").values(name="Smith"))  # altered
    engine.dispose()
    foreign = SqlSink(url)
    try:
        foreign.force([event("2099/1")])  # extra: HQ never sent it
    finally:
        foreign.close()


def test_a_damaged_copy_is_classified_mended_and_reported(two_copies: tuple[Bus, str, str]) -> None:
    bus, a, b = two_copies
    reference = SqlSink(a)
    manifest, expected = manifest_of(reference)
    reference.close()
    assert manifest.count == 8
    damage(b)
    hq = PlayedHQ(bus.settings, expected)
    sink = SqlSink(b)
    checker = CopyChecker(bus.settings.with_(repair="mend"), "FR", sink)
    try:
        hq.publish(manifest)
        t0 = time.monotonic()
        first = checker.check_once(manifest)
        took = time.monotonic() - t0
        second = checker.check_once(manifest)
    finally:
        checker.close()
        sink.close()
        hq.close()
    assert first.status is CopyStatus.DRIFT and first.reason is None, first
    assert (first.held, first.expected) == (8, 8)
    kinds = {MISSING: 1, EXTRA: 1, STALE: 1, RESURRECTED: 1, ALTERED: 1}
    assert first.counts == kinds
    assert first.mended == 3
    assert sorted(first.examples) == sorted(
        [
            ("2026/1", MISSING, True),
            ("2026/2", STALE, True),
            ("2026/3", RESURRECTED, True),
            ("2026/5", ALTERED, False),
            ("2099/1", EXTRA, False),
        ]
    )
    assert second.counts == {MISSING: 0, EXTRA: 1, STALE: 0, RESURRECTED: 0, ALTERED: 1}
    assert second.mended == 0
    after = local_rows(b)
    assert (after["2026/1"].version, after["2026/1"].status) == (1, "ACTIVE")
    assert (after["2026/2"].version, after["2026/2"].weight) == (2, 81.5)
    assert (after["2026/3"].status, after["2026/3"].withdrawn_reason) == ("WITHDRAWN", "arrested")
    assert after["2026/5"].name == "Smith" and "2099/1" in after  # left as they are
    assert len(hq.queries) == 2 and all(q.manifest_id == manifest.manifest_id for q in hq.queries)
    reports = copy_checks(bus.settings)
    assert [r.counts for r in reports] == [first.counts, second.counts]
    assert took < 30


def test_report_only_changes_nothing(two_copies: tuple[Bus, str, str]) -> None:
    bus, a, b = two_copies
    reference = SqlSink(a)
    manifest, expected = manifest_of(reference)
    reference.close()
    damage(b)
    before = {k: (r.version, r.status, r.name) for k, r in local_rows(b).items()}

    def ask(m: Manifest, buckets: Any) -> dict[int, list[Entry]]:
        return {x: [e for e in expected.values() if bucket_of(e.notice_id) == x] for x in buckets}

    sink = SqlSink(b)
    checker = CopyChecker(bus.settings, "FR", sink, ask=ask)  # repair defaults to report
    try:
        result = checker.check_once(manifest, send=False)
    finally:
        checker.close()
        sink.close()
    assert result.mended == 0 and sum(result.counts.values()) == 5
    assert {k: (r.version, r.status, r.name) for k, r in local_rows(b).items()} == before


def test_an_identical_copy_is_verified_without_a_query_by_the_running_checker(
    two_copies: tuple[Bus, str, str],
) -> None:
    bus, a, b = two_copies
    reference = SqlSink(a)
    manifest, expected = manifest_of(reference)
    reference.close()
    hq = PlayedHQ(bus.settings, expected)
    hq.publish(Manifest("FR", 0, bytes(4096)))  # an older manifest: only the last is checked
    hq.publish(manifest)
    sink = SqlSink(b)
    checker = CopyChecker(bus.settings, "FR", sink)
    stop = threading.Event()
    runner = threading.Thread(target=checker.run, args=(stop,), daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while not (reports := copy_checks(bus.settings)) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop.set()
        runner.join(15)
        sink.close()
        hq.close()
    assert [(r.status, r.manifest_id, r.held) for r in reports] == [
        (CopyStatus.VERIFIED, manifest.manifest_id, 8)
    ]
    assert hq.queries == []


def test_a_system_that_cannot_list_is_unverifiable(settings: Settings) -> None:
    class Blind(SqlSink):
        def entries(self) -> None:  # type: ignore[override]
            return None

    init_topics(settings, ["FR"])
    sink = Blind("sqlite://")
    checker = CopyChecker(settings, "FR", sink, ask=lambda m, b: {})
    result = checker.check_once(Manifest("FR", 3, bytes(4096)), send=False)
    sink.close()
    assert result.status is CopyStatus.UNVERIFIABLE and result.reason
    assert (result.held, result.expected) == (0, 3)


def test_classify() -> None:
    hq = Entry("2026/1", 2, "ACTIVE", "c")
    assert classify(hq, None) == MISSING
    assert classify(None, hq) == EXTRA
    assert classify(hq, Entry("2026/1", 1, "ACTIVE", "c")) == STALE
    assert classify(hq, Entry("2026/1", 2, "ACTIVE", "d")) == ALTERED
    assert classify(hq, Entry("2026/1", 2, "ACTIVE", "")) == ALTERED
    assert classify(hq, Entry("2026/1", 2, "ACTIVE", ""), content=False) is None
    assert classify(hq, Entry("2026/1", 3, "ACTIVE", "x")) is None  # newer than the manifest
    cancelled = Entry("2026/1", 2, "WITHDRAWN", "")
    assert classify(cancelled, Entry("2026/1", 2, "ACTIVE", "c")) == RESURRECTED
    assert classify(cancelled, Entry("2026/1", 1, "ACTIVE", "c")) == STALE
    assert classify(cancelled, cancelled) is None


def test_the_copy_check_command_checks_the_latest_manifest_once(
    two_copies: tuple[Bus, str, str], cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    from notice_bus.cli import main

    bus, a, b = two_copies
    reference = SqlSink(a)
    manifest, expected = manifest_of(reference)
    reference.close()
    damage(b)
    hq = PlayedHQ(bus.settings, expected)
    try:
        hq.publish(manifest)
        args = ["copy-check", "--country", "FR", "--database-url", b, "--once"]
        assert main([*args, "--repair", "mend"]) == 1
        first = capsys.readouterr().out
        assert main(args) == 1
        second = capsys.readouterr().out
    finally:
        hq.close()
    assert "DRIFT" in first and "1 missing" in first and "3 mended" in first, first
    assert "1 extra, 0" not in second and "1 altered" in second and "missing" not in second


def test_sql_entries_hash_what_hq_sent(tmp_path: Path) -> None:
    from dataclasses import replace

    from notice_bus.wire.digest import content_hash
    from notice_bus.wire.model import Action
    from tests.factories import PERSON

    odd = replace(PERSON, height=1.8, weight=75, eyes_colors_id=None, images=())
    sink = SqlSink(f"sqlite:///{tmp_path}/one.db")
    try:
        sink.force([event("2026/1", person=odd), event("2026/2", 3, Action.CANCEL)])
        listed = sorted(sink.entries())
    finally:
        sink.close()
    assert listed == [
        Entry("2026/1", 1, "ACTIVE", content_hash("RU", odd.to_avro())),
        Entry("2026/2", 3, "WITHDRAWN", ""),
    ]
