"""The whole path on a real Kafka broker, into real PostgreSQL and SQLite."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from kafka import KafkaConsumer, KafkaProducer

from notice_bus.bureau.sinks.tables import RED_NOTICE
from notice_bus.hq.tables import OUTBOX
from notice_bus.reports.report import Status, build_report
from notice_bus.runtime.kafka import kafka_config
from notice_bus.runtime.settings import Settings
from notice_bus.tracker.tables import ACK, SENT
from notice_bus.wire.codec import AvroCodec, load_schema
from notice_bus.wire.model import Ack, AckStatus, Action, utcnow
from notice_bus.wire.schema_registry import KafkaSchemaStore
from notice_bus.wire.topics import TopicNames
from tests.conftest import Bus
from tests.factories import draft, event

pytestmark = pytest.mark.kafka
V2 = json.loads((Path(__file__).parent / "schemas" / "notice_event_v2.avsc").read_text())


def local_rows(url: str) -> dict[str, Any]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = {r.notice_id: r for r in conn.execute(sa.select(RED_NOTICE)).all()}
    engine.dispose()
    return rows


def tracked(bus: Bus, table: sa.Table, **where: Any) -> list[Any]:
    with bus.tracker.engine.connect() as conn:
        query = sa.select(table)
        for column, value in where.items():
            query = query.where(table.c[column] == value)
        return list(conn.execute(query).all())


def recorded(bus: Bus, country: str, count: int) -> Callable[[], bool]:
    return lambda: len(tracked(bus, ACK, country=country, status="RECORDED")) >= count


@pytest.fixture(params=["postgresql", "sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "postgresql":
        make: Callable[[], str] = request.getfixturevalue("new_postgres_db")
        return make()
    return f"sqlite:///{tmp_path}/country.db"


def test_publish_is_recorded_acknowledged_and_reported(
    make_bus: Callable[..., Bus], db_url: str, tmp_path: Any
) -> None:
    bus = make_bus(["FR", "TH"])
    bus.adapter("FR", db_url)
    bus.adapter("TH", f"sqlite:///{tmp_path}/th.db")
    [ev] = bus.hq.publish([draft("2026/1")])
    bus.pump(lambda: recorded(bus, "FR", 1)() and recorded(bus, "TH", 1)())

    row = local_rows(db_url)["2026/1"]
    assert (row.version, row.status, row.name, row.forename) == (1, "ACTIVE", "Иванов", "Алексей")
    assert row.arrest_warrants == [
        {"issuing_country_id": "RU", "charge": "Мошенничество", "charge_translation": "Fraud"}
    ]
    assert row.event_id == ev.event_id
    statuses = {a.status for a in tracked(bus, ACK, country="FR")}
    assert statuses == {"RECEIVED", "RECORDED"}

    report = {r.country: r for r in build_report(bus.tracker.engine, bus.settings)}
    fr = report["FR"]
    assert (fr.sent, fr.recorded, fr.outstanding, fr.status) == (1, 1, 0, Status.OK)
    assert fr.p50_lag_s is not None and 0 <= fr.p50_lag_s < 30


def test_update_then_cancel(
    make_bus: Callable[..., Bus], new_postgres_db: Callable[[], str]
) -> None:
    url = new_postgres_db()
    bus = make_bus(["FR"])
    bus.adapter("FR", url)
    bus.hq.publish([draft("2026/2")])
    bus.pump(recorded(bus, "FR", 1))
    [update] = bus.hq.publish([draft("2026/2", weight=81.5)])
    assert (update.version, update.action) == (2, Action.UPDATE)
    bus.pump(recorded(bus, "FR", 2))
    assert local_rows(url)["2026/2"].weight == 81.5

    cancel = bus.hq.cancel("2026/2", "arrested in Bangkok")
    assert (cancel.version, cancel.action) == (3, Action.CANCEL)
    bus.pump(recorded(bus, "FR", 3))
    row = local_rows(url)["2026/2"]
    assert (row.version, row.status, row.withdrawn_reason) == (
        3,
        "WITHDRAWN",
        "arrested in Bangkok",
    )


def test_republishing_an_unchanged_notice_sends_nothing(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus(["FR"])
    assert len(bus.hq.publish([draft("2026/3")])) == 1
    assert bus.hq.publish([draft("2026/3")]) == []


def test_duplicate_delivery_leaves_one_row_and_one_ack(
    make_bus: Callable[..., Bus], new_postgres_db: Callable[[], str]
) -> None:
    url = new_postgres_db()
    bus = make_bus(["FR"])
    bus.adapter("FR", url)
    bus.hq.publish([draft("2026/4")])
    # HQ crashed after sending but before marking the outbox: the relay sends it again.
    with bus.hq.engine.begin() as conn:
        conn.execute(sa.update(OUTBOX).values(sent_at=None))
    assert bus.hq.relay() == 1
    bus.pump(lambda: len(tracked(bus, SENT)) == 1 and recorded(bus, "FR", 1)())
    bus.pump(lambda: all(a.step() == 0 for a in bus.adapters.values()))  # drain the duplicate
    rows = local_rows(url)
    assert list(rows) == ["2026/4"] and rows["2026/4"].version == 1
    assert len(tracked(bus, ACK, status="RECORDED")) == 1
    [fr] = build_report(bus.tracker.engine, bus.settings)
    assert (fr.sent, fr.recorded, fr.outstanding) == (1, 1, 0)


def send_raw(settings: Settings, country: str, events: list[Any]) -> None:
    codec = AvroCodec(load_schema("notice_event"), KafkaSchemaStore(settings))
    producer = KafkaProducer(**kafka_config(settings, "test"))
    topic = TopicNames(settings.topic_prefix).notices(country)
    for e in events:
        value = e if isinstance(e, bytes) else codec.encode(e.to_avro())
        key = b"2026/9" if isinstance(e, bytes) else e.notice_id.encode()
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def test_a_batch_is_acknowledged_in_few_messages_that_stand_for_received_too(
    make_bus: Callable[..., Bus], tmp_path: Any
) -> None:
    bus = make_bus(["FR"])
    hours_ahead = lambda: utcnow() + timedelta(hours=3)  # noqa: E731
    bus.adapter("FR", f"sqlite:///{tmp_path}/fr.db", clock=hours_ahead)
    send_raw(bus.settings, "FR", [event(f"2026/{100 + i}") for i in range(40)])
    bus.pump(recorded(bus, "FR", 40))

    messages = read_topic(bus.settings, TopicNames(bus.settings.topic_prefix).acks("FR"))
    codec = AvroCodec(load_schema("ack"), KafkaSchemaStore(bus.settings))
    acks = [Ack.from_avro(codec.decode(m.value)) for m in messages]
    assert len(acks) < 40  # bundled: a poll of several records gets one message
    assert sorted(e for a in acks for e in a.events()) == sorted(
        (f"2026/{100 + i}", 1) for i in range(40)
    )
    assert {a.status for a in acks} == {AckStatus.RECORDED}
    assert all(a.received_at is not None and a.received_at <= a.at for a in acks)
    # The tracker keeps a RECEIVED per event, placed on the broker's clock (the bureau's
    # runs three hours ahead), between the notice's arrival and its RECORDED.
    sent = {r.notice_id: r.broker_at for r in tracked(bus, SENT, country="FR")}
    done = {a.notice_id: a.broker_at for a in tracked(bus, ACK, status="RECORDED")}
    got = {a.notice_id: a.broker_at for a in tracked(bus, ACK, status="RECEIVED")}
    assert got.keys() == done.keys() == sent.keys()
    slack = timedelta(milliseconds=5)  # millisecond timestamps, rounded on each clock
    assert all(sent[n] - slack <= got[n] <= done[n] + slack for n in sent)


def read_topic(settings: Settings, topic: str) -> list[Any]:
    consumer = KafkaConsumer(
        **kafka_config(settings, "test"), auto_offset_reset="earliest", consumer_timeout_ms=3000
    )
    consumer.subscribe([topic])
    messages = list(consumer)
    consumer.close()
    return messages


def test_older_version_after_newer_never_wins(
    make_bus: Callable[..., Bus], new_postgres_db: Callable[[], str]
) -> None:
    url = new_postgres_db()
    bus = make_bus(["FR"])
    bus.adapter("FR", url)
    send_raw(
        bus.settings, "FR", [event("2026/5", 2, Action.UPDATE, reason=None), event("2026/5", 1)]
    )
    bus.pump(recorded(bus, "FR", 2))
    assert local_rows(url)["2026/5"].version == 2

    # A cancel, then a stale update delivered late: the notice stays withdrawn.
    send_raw(bus.settings, "FR", [event("2026/5", 3, Action.CANCEL), event("2026/5", 2)])
    bus.pump(lambda: len(tracked(bus, ACK, status="RECORDED")) >= 3)
    bus.pump(lambda: all(a.step() == 0 for a in bus.adapters.values()))
    row = local_rows(url)["2026/5"]
    assert (row.version, row.status) == (3, "WITHDRAWN")


def test_cancel_of_a_notice_never_seen_blocks_its_late_versions(
    make_bus: Callable[..., Bus], tmp_path: Any
) -> None:
    url = f"sqlite:///{tmp_path}/fr.db"
    bus = make_bus(["FR"])
    bus.adapter("FR", url)
    send_raw(bus.settings, "FR", [event("2026/6", 4, Action.CANCEL), event("2026/6", 3)])
    bus.pump(recorded(bus, "FR", 2))
    row = local_rows(url)["2026/6"]
    assert (row.version, row.status, row.name) == (4, "WITHDRAWN", None)


def test_poison_messages_are_dead_lettered_with_a_rejected_ack(
    make_bus: Callable[..., Bus], tmp_path: Any
) -> None:
    url = f"sqlite:///{tmp_path}/fr.db"
    bus = make_bus(["FR", "TH"])
    bus.adapter("FR", url)
    unregistered = AvroCodec(V2).encode({**event("2026/9").to_avro(), "priority": None})
    poison = [
        b"\x00not avro at all",
        unregistered,
        event("2026/9", person=None),  # a PUBLISH without the person
        event("2026/9", target_countries=("TH",)),  # routed to the wrong country
        event("2026/10"),  # a good one after them
    ]
    send_raw(bus.settings, "FR", poison)
    bus.pump(lambda: len(tracked(bus, ACK, status="REJECTED")) == 4 and recorded(bus, "FR", 1)())
    reasons = sorted(a.reason for a in tracked(bus, ACK, status="REJECTED"))
    assert any("not an Avro single-object message" in r for r in reasons)
    assert any("unknown writer schema" in r for r in reasons)
    assert any("needs the person" in r for r in reasons)
    assert any("not addressed to FR" in r for r in reasons)
    assert list(local_rows(url)) == ["2026/10"]

    dlq = KafkaConsumer(
        **kafka_config(bus.settings, "test"), auto_offset_reset="earliest", consumer_timeout_ms=5000
    )
    dlq.subscribe([TopicNames(bus.settings.topic_prefix).dead_letters("FR")])
    parked = [m for _, m in zip(range(4), dlq, strict=False)]
    dlq.close()
    assert len(parked) == 4
    assert parked[0].value == b"\x00not avro at all"  # the original bytes, untouched
    headers = dict(parked[0].headers)
    assert headers["source.offset"] == b"0" and b"not an Avro" in headers["reason"]


def test_targeted_notice_reaches_only_its_countries(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus(["FR", "TH", "ID"])
    bus.hq.publish([draft("2026/11", targets=("TH",))])
    bus.pump(lambda: len(tracked(bus, SENT)) >= 1)
    assert [s.country for s in tracked(bus, SENT)] == ["TH"]


def test_schema_evolution_over_kafka_both_ways(settings: Settings) -> None:
    from notice_bus.wire.topics import init_topics

    init_topics(settings, [])
    v1 = load_schema("notice_event")
    # Writer and reader are separate processes in life: separate stores, one topic between.
    new_writer = AvroCodec(V2, KafkaSchemaStore(settings))
    old_reader = AvroCodec(v1, KafkaSchemaStore(settings))
    data = new_writer.encode({**event().to_avro(), "priority": "urgent"})
    assert old_reader.decode(data)["notice_id"] == "2026/100"

    old_writer = AvroCodec(v1, KafkaSchemaStore(settings))
    new_reader = AvroCodec(V2, KafkaSchemaStore(settings))
    assert new_reader.decode(old_writer.encode(event().to_avro()))["priority"] is None
