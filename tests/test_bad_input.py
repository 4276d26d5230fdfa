"""Bad input never stops a process: the tracker quarantines what it cannot store and goes on,
a bad record on the schema topic is skipped, and notice ids are ASCII digits, nothing more."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from kafka import KafkaProducer

from notice_bus.errors import InvalidNotice
from notice_bus.runtime.kafka import kafka_config
from notice_bus.runtime.settings import Settings
from notice_bus.tracker.ingest import Tracker
from notice_bus.tracker.tables import ACK, RESPONSE
from notice_bus.wire.codec import AvroCodec, load_schema, schema_fingerprint
from notice_bus.wire.model import Ack, AckStatus, Answer, Response, utcnow
from notice_bus.wire.schema_registry import KafkaSchemaStore
from notice_bus.wire.topics import TopicNames, init_topics
from notice_bus.wire.validation import check_notice_id, parse_draft
from tests.conftest import Bus
from tests.factories import draft, notice_json

TOO_LONG = "2026/" + "1" * 40  # 45 characters; tracker_ack.notice_id holds 32
QUARANTINE = sa.table(
    "tracker_quarantine", *[sa.column(c) for c in ("topic", "offset", "reason", "raw")]
)


@pytest.mark.parametrize("notice_id", ["٢٠٢٦/١٢", "2026/١٢", "２０２６/12", "2026/12\n"])
def test_notice_ids_are_ascii_digits_and_nothing_after(notice_id: str) -> None:
    with pytest.raises(InvalidNotice, match="notice_id"):
        check_notice_id(notice_id)
    with pytest.raises(InvalidNotice, match="notice_id"):
        parse_draft(notice_json(notice_id))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("date_of_birth", "1985/07/14\n"),
        ("date_of_birth", "١٩٨٥/07/14"),
        ("nationalities", ["FR\n"]),
        ("eyes_colors_id", ["BRO\n"]),
    ],
)
def test_other_coded_fields_take_no_trailing_newline_or_foreign_digits(
    field: str, value: Any
) -> None:
    with pytest.raises(InvalidNotice, match=field):
        parse_draft(notice_json("2026/1", **{field: value}))


# --- the tracker ---------------------------------------------------------------------------


@pytest.fixture(params=["postgresql", "sqlite"])
def tracker_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        make: Callable[[], str] = request.getfixturevalue("new_postgres_db")
        return make()
    return f"sqlite:///{tmp_path}/tracker.db"


def produce(
    settings: Settings, topic: str, values: Sequence[bytes | None], key: bytes = b"k"
) -> None:
    """One key, so one partition: the records keep their order and offsets 0, 1, ..."""
    producer = KafkaProducer(**kafka_config(settings, "test"))
    for value in values:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def ack(notice_id: str, version: int = 1, **kw: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "country": "FR",
        "notice_id": notice_id,
        "version": version,
        "status": AckStatus.RECORDED,
        "at": utcnow(),
        "adapter_id": "fr-1",
        **kw,
    }
    return Ack(**values).to_avro()


def stored(url: str, table: sa.TableClause, *columns: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = sorted(tuple(r) for r in conn.execute(sa.select(*[table.c[c] for c in columns])))
    engine.dispose()
    return found


def step_until(tracker: Tracker, until: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        tracker.step()
        if until():
            return
    raise AssertionError(f"condition not reached within {timeout_s}s")


@pytest.mark.kafka
def test_the_tracker_quarantines_what_it_cannot_store_and_goes_on(
    settings: Settings, tracker_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    init_topics(settings, ["FR"])
    names = TopicNames(settings.topic_prefix)
    acks = AvroCodec(load_schema("ack"), KafkaSchemaStore(settings))
    answers = AvroCodec(load_schema("response"), KafkaSchemaStore(settings))
    produce(
        settings,
        names.acks("FR"),
        [
            acks.encode(ack("2026/1")),
            acks.encode(ack(TOO_LONG)),  # @1
            b"not an Avro message",  # @2
            acks.encode(ack("2026/2", also=(("2026/3", 1),))),
            acks.encode(ack("2026/4", also=(("2026/5", -3),))),  # @4
            # What an adapter sends for a record without a readable id: to be stored.
            acks.encode(ack("", 0, status=AckStatus.REJECTED, reason="x" * 5000)),
        ],
    )
    response = Response("FR", "2026/1", Answer.LOCATED, utcnow(), "officer 7", "seen\x00 in Lyon")
    bad_response = Response("FR", TOO_LONG, Answer.LOCATED, utcnow(), "officer 7")
    produce(
        settings,
        names.responses("FR"),
        [answers.encode(response.to_avro()), answers.encode(bad_response.to_avro())],
    )

    def quarantined() -> list[tuple[Any, ...]]:
        return stored(tracker_db, QUARANTINE, "topic", "offset", "raw")

    tracker = Tracker(settings, database_url=tracker_db)
    with caplog.at_level(logging.ERROR, logger="notice_bus.tracker"):
        try:
            step_until(tracker, lambda: len(quarantined()) == 4)
        finally:
            tracker.close()
    assert stored(tracker_db, ACK, "notice_id", "version") == [
        ("", 0),
        ("2026/1", 1),
        ("2026/2", 1),
        ("2026/3", 1),
    ]
    assert stored(tracker_db, RESPONSE, "notice_id", "text") == [("2026/1", "seen\ufffd in Lyon")]
    [raw] = [raw for topic, offset, raw in quarantined() if offset == 2]
    assert raw == b"not an Avro message"  # kept as it came
    assert sorted((t, o) for t, o, _ in quarantined()) == [
        (names.acks("FR"), 1),
        (names.acks("FR"), 2),
        (names.acks("FR"), 4),
        (names.responses("FR"), 1),
    ]
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert f"{names.acks('FR')}[" in logged and "]@1: " in logged and "notice_id" in logged

    # A tracker started again on the same database goes on, and stores nothing twice.
    produce(settings, names.acks("FR"), [acks.encode(ack("2026/6")), acks.encode(ack(TOO_LONG))])
    again = Tracker(settings, database_url=tracker_db)
    try:
        step_until(again, lambda: len(quarantined()) == 5)
    finally:
        again.close()
    assert ("2026/6", 1) in stored(tracker_db, ACK, "notice_id", "version")


@pytest.mark.kafka
def test_a_batch_the_database_refuses_is_stored_record_by_record(
    settings: Settings, tracker_db: str
) -> None:
    init_topics(settings, ["FR"])
    tracker = Tracker(settings, database_url=tracker_db)
    engine = sa.create_engine(tracker_db)
    with engine.begin() as conn:  # a rule of the tracker's database the fields pass
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql(
                "ALTER TABLE tracker_ack ADD CONSTRAINT no_poison CHECK (adapter_id <> 'poison')"
            )
        else:
            conn.exec_driver_sql(
                "CREATE TRIGGER no_poison BEFORE INSERT ON tracker_ack"
                " WHEN NEW.adapter_id = 'poison' BEGIN SELECT RAISE(ABORT, 'no_poison'); END"
            )
    engine.dispose()
    acks = AvroCodec(load_schema("ack"), KafkaSchemaStore(settings))
    topic = TopicNames(settings.topic_prefix).acks("FR")
    produce(
        settings,
        topic,
        [
            acks.encode(ack("2026/10")),
            acks.encode(ack("2026/11", adapter_id="poison")),
            acks.encode(ack("2026/12")),
        ],
    )
    try:
        step_until(tracker, lambda: len(stored(tracker_db, QUARANTINE, "offset")) == 1)
    finally:
        tracker.close()
    assert stored(tracker_db, ACK, "notice_id") == [("2026/10",), ("2026/12",)]
    [(offset, reason)] = stored(tracker_db, QUARANTINE, "offset", "reason")
    assert offset == 1 and "no_poison" in reason


# --- the schema topic ----------------------------------------------------------------------


INTRUDER = {"type": "record", "name": "Intruder", "namespace": "x", "fields": []}


@pytest.mark.kafka
def test_garbage_on_the_schema_topic_is_skipped_and_everything_works(
    make_bus: Callable[..., Bus],
    settings: Settings,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    init_topics(settings, ["FR"])
    topic = TopicNames(settings.topic_prefix).schemas
    lying_key = bytes(range(8)).hex().encode()  # not the fingerprint of INTRUDER
    for key, value in [
        (b"garbage", b"\xff\xfe not JSON"),
        (b"list", b"[1, 2, 3]"),
        (b"nonsense", b'{"type": "no such type"}'),
        (lying_key, json.dumps(INTRUDER).encode()),
        (b"tombstone", None),
    ]:
        produce(settings, topic, [value], key=key)

    with caplog.at_level(logging.ERROR, logger="notice_bus.schema_registry"):
        bus = make_bus(["FR"])  # HQ, the tracker: each reads the schema topic
        bus.adapter("FR", f"sqlite:///{tmp_path}/fr.db")
        bus.hq.publish([draft("2026/1", ("FR",))])

        def recorded() -> bool:
            with bus.tracker.engine.connect() as conn:
                return bool(conn.execute(sa.select(ACK).where(ACK.c.status == "RECORDED")).all())

        bus.pump(recorded)
    skipped = [r.getMessage() for r in caplog.records if r.name == "notice_bus.schema_registry"]
    for offset in range(5):
        assert any(f"{topic}[0]@{offset}: " in m for m in skipped), (offset, skipped)
    store = KafkaSchemaStore(settings)
    assert store.lookup(schema_fingerprint(INTRUDER)) is None  # its key lied
    assert store.lookup(bytes(range(8))) is None


@pytest.mark.kafka
def test_unknown_fingerprints_do_not_read_the_schema_topic_again(settings: Settings) -> None:
    init_topics(settings, [])
    writer = KafkaSchemaStore(settings)
    for name in ("ack", "response"):
        writer.register(load_schema(name))
    store = KafkaSchemaStore(settings)
    unknown = b"\x00" * 8
    assert store.lookup(unknown) is None  # reads the topic: two records
    started = time.monotonic()
    for _ in range(50):
        assert store.lookup(unknown) is None
    assert time.monotonic() - started < 2.0  # not 50 reads of the topic
    assert store.lookup(b"\x01" * 8) is None  # another: looks, finds nothing new
    assert store.records_read == 2
    reminder = load_schema("reminder")
    writer.register(reminder)
    assert store.lookup(schema_fingerprint(reminder)) == reminder
    assert store.records_read == 3  # only what was new
