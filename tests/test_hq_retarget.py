"""HQ's side of retargeting: an update or a cancel reaches every country that ever got the
notice, and a late country gets the very bytes of a notice's current version.

Read from the notices topics themselves, on the real broker; HQ's database is SQLite and
PostgreSQL in turn.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from kafka import KafkaConsumer, TopicPartition

from notice_bus.errors import InvalidNotice
from notice_bus.hq.publisher import HQ
from notice_bus.runtime.kafka import kafka_config
from notice_bus.runtime.settings import Settings
from notice_bus.wire.codec import AvroCodec, load_schema
from notice_bus.wire.model import NOT_ADDRESSED, Action, NoticeEvent
from notice_bus.wire.schema_registry import KafkaSchemaStore
from notice_bus.wire.topics import TopicNames, init_topics
from tests.conftest import Bus
from tests.factories import draft


@dataclass(frozen=True)
class Wire:
    """A record of a notices topic: its key, the decoded event and the bytes."""

    key: str
    event: NoticeEvent
    payload: bytes


def on_the_wire(settings: Settings, countries: list[str]) -> dict[str, list[Wire]]:
    """Every record of each country's notices topic, in offset order per partition (a key
    stays in one partition, so a notice's records are in the order the broker took them)."""
    codec = AvroCodec(load_schema("notice_event"), KafkaSchemaStore(settings))
    names = TopicNames(settings.topic_prefix)
    consumer = KafkaConsumer(**kafka_config(settings, "test-wire"), enable_auto_commit=False)
    out: dict[str, list[Wire]] = {}
    try:
        for cc in countries:
            topic = names.notices(cc)
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            end = consumer.end_offsets(tps)
            records = []
            deadline = time.monotonic() + 15
            while any(consumer.position(tp) < end[tp] for tp in tps):
                assert time.monotonic() < deadline, f"could not read {topic}"
                for batch in consumer.poll(timeout_ms=500).values():
                    records += batch
            out[cc] = [
                Wire(r.key.decode(), NoticeEvent.from_avro(codec.decode(r.value)), r.value)
                for r in records
            ]
    finally:
        consumer.close()
    return out


def versions(wire: dict[str, list[Wire]], notice_id: str) -> dict[str, list[tuple[int, Action]]]:
    """Per country, the (version, action) of each record of ``notice_id``, in order."""
    return {
        cc: [(w.event.version, w.event.action) for w in records if w.key == notice_id]
        for cc, records in wire.items()
    }


def test_an_update_and_a_cancel_reach_every_country_that_ever_had_the_notice(
    make_bus: Callable[..., Bus], hq_url: str
) -> None:
    bus = make_bus(["DE", "FR", "TH"], hq_database_url=hq_url)
    bus.hq.publish([draft("2026/1", targets=("DE", "TH")), draft("2026/2")])
    bus.hq.publish([draft("2026/1", targets=("FR",)), draft("2026/2", targets=("FR",))])
    bus.hq.cancel("2026/1", "arrested")
    bus.hq.cancel("2026/2", "arrested")
    wire = versions(on_the_wire(bus.settings, ["DE", "FR", "TH"]), "2026/1")
    dropped = [(1, Action.PUBLISH), (2, Action.UPDATE), (3, Action.CANCEL)]
    assert wire == {"DE": dropped, "TH": dropped, "FR": [(2, Action.UPDATE), (3, Action.CANCEL)]}
    # A broadcast narrowed to FR: every country had it, every country hears of both.
    wire = versions(on_the_wire(bus.settings, ["DE", "FR", "TH"]), "2026/2")
    assert wire == {cc: dropped for cc in ("DE", "FR", "TH")}


def test_a_cancel_cannot_pass_for_a_retargeting(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus(["DE"])
    bus.hq.publish([draft("2026/3")])
    with pytest.raises(InvalidNotice) as caught:
        bus.hq.cancel("2026/3", NOT_ADDRESSED)
    assert caught.value.field == "reason"
    assert bus.hq.pending() == 0
    bus.hq.cancel("2026/3", "arrested")  # still active, and can be cancelled


def test_a_bootstrap_after_retargeting_sends_the_stored_current_version(
    make_bus: Callable[..., Bus], hq_url: str
) -> None:
    bus = make_bus(["DE", "TH"], hq_database_url=hq_url)
    bus.hq.publish([draft("2026/4"), draft("2026/5", targets=("DE", "TH"))])
    bus.hq.publish([draft("2026/4", weight=80.0), draft("2026/5")])  # 5: now a broadcast
    bus.hq.publish([draft("2026/6", targets=("TH",))])
    init_topics(bus.settings, ["NG"])
    assert bus.hq.bootstrap("NG") == 2
    wire = on_the_wire(bus.settings, ["DE", "NG"])
    sent = {w.key: w for w in wire["NG"]}
    assert sorted(sent) == ["2026/4", "2026/5"]
    for notice_id in sent:
        [current] = [w for w in wire["DE"] if w.key == notice_id and w.event.version == 2]
        assert sent[notice_id].payload == current.payload  # same bytes, same event id
        assert sent[notice_id].payload == stored(hq_url, notice_id, 2)


def stored(url: str, notice_id: str, version: int) -> bytes:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return bytes(
                conn.execute(
                    sa.text("SELECT payload FROM hq_version WHERE notice_id = :n AND version = :v"),
                    {"n": notice_id, "v": version},
                ).scalar_one()
            )
    finally:
        engine.dispose()


def test_a_late_country_catches_up_on_the_current_version_made_by_another_hq(
    make_bus: Callable[..., Bus], hq_url: str
) -> None:
    bus = make_bus(["DE"], hq_database_url=hq_url, country_refresh_s=1.0)
    bus.hq.publish([draft("2026/7")])  # this HQ now holds the list [DE] for a second
    init_topics(bus.settings, ["NG"])
    with HQ(bus.settings.with_(hq_database_url=hq_url)) as other:  # sees NG
        other.publish([draft("2026/7", weight=99.0)])
    time.sleep(1.1)
    bus.hq.publish([draft("2026/8")])  # looks again, finds NG, catches it up on 2026/7
    wire = on_the_wire(bus.settings, ["DE", "NG"])
    latest = [w for w in wire["NG"] if w.key == "2026/7"][-1]
    assert latest.event.version == 2  # never the v1 this HQ remembered
    assert latest.payload == [w for w in wire["DE"] if w.key == "2026/7"][-1].payload


def test_a_database_from_before_stored_versions_gets_them_at_the_first_bootstrap(
    make_bus: Callable[..., Bus], hq_url: str
) -> None:
    bus = make_bus(["DE"], hq_database_url=hq_url)
    bus.hq.publish([draft("2026/9"), draft("2026/10")])
    bus.hq.cancel("2026/10", "arrested")
    bus.hq.close()
    engine = sa.create_engine(hq_url)  # as the previous release left it
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS hq_version"))
        conn.execute(sa.text("DROP INDEX IF EXISTS ix_hq_outbox_key_topic"))
        conn.execute(sa.text("DROP TABLE IF EXISTS alembic_version_hq"))  # before migrations
    engine.dispose()
    init_topics(bus.settings, ["NG"])
    with HQ(bus.settings.with_(hq_database_url=hq_url)) as hq:
        assert hq.bootstrap("NG") == 1
        assert hq.bootstrap("NG") == 1  # an operator runs it again
    [first, again] = on_the_wire(bus.settings, ["NG"])["NG"]
    assert (first.key, first.event.version) == ("2026/9", 1)
    assert again.payload == first.payload  # stored at the first, sent as stored at both
    assert first.payload == stored(hq_url, "2026/9", 1)
