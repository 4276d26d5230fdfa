"""A country's status from its acknowledgements first, on the real broker: a bureau that
acknowledges without ever joining the consumer group ``notice-bus.CC`` (one written in another
language, a hub, a replay), and a tracker database kept from a run on another broker. And the
report's database: one that does not exist is an error, not an empty report."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from kafka import KafkaProducer

from notice_bus.errors import ConfigError
from notice_bus.reports.report import CountryReport, Status, build_report
from notice_bus.runtime.db import make_engine
from notice_bus.runtime.kafka import kafka_config
from notice_bus.runtime.settings import Settings
from notice_bus.tracker.group_health import Sample
from notice_bus.tracker.tables import SENT, TRACKER_TABLES
from notice_bus.wire.codec import AvroCodec, load_schema
from notice_bus.wire.model import Ack, AckStatus, utcnow
from notice_bus.wire.topics import TopicNames
from tests.conftest import Bus
from tests.factories import draft


def report(bus: Bus) -> dict[str, CountryReport]:
    return {r.country: r for r in build_report(bus.tracker.engine, bus.settings)}


def figure(bus: Bus, country: str, name: str) -> object:
    """One figure of the country's report row; None while the country is not in it."""
    row = report(bus).get(country)
    return None if row is None else getattr(row, name)


def tracked(bus: Bus, country: str) -> list[tuple[str, int]]:
    with bus.tracker.engine.connect() as conn:
        query = sa.select(SENT.c.notice_id, SENT.c.version).where(SENT.c.country == country)
        return [(n, v) for n, v in conn.execute(query.order_by(SENT.c.notice_id))]


def acknowledge(settings: Settings, country: str, events: list[tuple[str, int]]) -> None:
    """What a bureau written in another language does: one RECORDED per notice on acks.CC,
    single-object Avro from ack.avsc, with a plain producer and no consumer group at all."""
    codec = AvroCodec(load_schema("ack"))
    producer = KafkaProducer(**kafka_config(settings, "java-bureau"), acks="all")
    topic = TopicNames(settings.topic_prefix).acks(country)
    try:
        for notice_id, version in events:
            ack = Ack(country, notice_id, version, AckStatus.RECORDED, utcnow(), "java-bureau")
            producer.send(topic, key=notice_id.encode(), value=codec.encode(ack.to_avro()))
        producer.flush(30)
    finally:
        producer.close()


def sampled(bus: Bus, check: Callable[[dict[str, Sample]], bool]) -> Callable[[], bool]:
    """A pump condition: the tracker samples the consumer groups, and ``check`` holds."""
    return lambda: check(bus.tracker.sample())


@pytest.mark.kafka
def test_a_bureau_that_acknowledges_without_a_group_is_not_never_connected(
    make_bus: Callable[..., Bus],
) -> None:
    bus = make_bus(["FR", "DE"], lag_threshold_s=3.0, down_after_s=600.0)
    bus.hq.publish([draft(f"2026/{n}", targets=("FR", "DE")) for n in range(1, 6)])
    bus.pump(lambda: len(tracked(bus, "FR")) == 5 and len(tracked(bus, "DE")) == 5)
    acknowledge(bus.settings, "FR", tracked(bus, "FR"))
    time.sleep(3.5)  # past the lag threshold: what DE leaves unacknowledged is late
    acknowledge(bus.settings, "DE", tracked(bus, "DE")[1:])
    bus.pump(lambda: figure(bus, "FR", "recorded") == 5 and figure(bus, "DE", "recorded") == 4)
    # Nobody ever joined notice-bus.FR or notice-bus.DE: to the group side, never connected.
    bus.pump(sampled(bus, lambda s: len(s) == 2))
    r = report(bus)
    assert (r["FR"].outstanding, r["FR"].consumer_lag, r["FR"].status) == (0, 5, Status.OK)
    assert (r["DE"].outstanding, r["DE"].status) == (1, Status.LAGGING)


@pytest.mark.kafka
def test_a_tracker_database_kept_from_another_broker(
    make_bus: Callable[..., Bus], tmp_path: Path
) -> None:
    """The by-hand run of issue 13: the demo's tracker database, a new broker (here: new
    topics and groups), BR's adapter running with nothing new to do, TH's not started."""
    fast = {"lag_threshold_s": 1.0, "down_after_s": 2.0}
    old = make_bus(["BR", "TH"], **fast)
    old.adapter("TH", f"sqlite:///{tmp_path}/th.db")
    br = old.adapter("BR", f"sqlite:///{tmp_path}/br.db")
    old.hq.publish([draft(f"2026/{n}", targets=("BR", "TH")) for n in range(1, 4)])
    old.pump(lambda: figure(old, "TH", "recorded") == 3 and figure(old, "BR", "recorded") == 3)
    br.close()  # BR falls behind: these three it never records
    del old.adapters["BR"]
    old.hq.publish([draft(f"2026/{n}", targets=("BR", "TH")) for n in range(4, 7)])
    old.pump(lambda: figure(old, "TH", "recorded") == 6 and figure(old, "BR", "outstanding") == 3)

    new = make_bus(
        ["BR", "TH"],
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        hq_database_url=f"sqlite:///{tmp_path}/hq-new.db",
        **fast,
    )
    new.adapter("BR", f"sqlite:///{tmp_path}/br-new.db")
    new.hq.publish([draft(f"2026/{n}", targets=("TH",)) for n in range(7, 9)])
    new.pump(lambda: figure(new, "TH", "outstanding") == 2)
    time.sleep(2.5)  # past down_after_s since the old run's last acknowledgement
    new.pump(
        sampled(
            new,
            lambda s: "BR" in s and s["BR"].members == 1 and "TH" in s and s["TH"].end_offset == 2,
        )
    )
    r = report(new)
    # BR's new group is caught up with someone in it; three notices still wait, for long.
    assert (r["BR"].outstanding, r["BR"].consumer_lag) == (3, 0)
    assert r["BR"].oldest_outstanding_s is not None and r["BR"].oldest_outstanding_s > 2
    # TH recorded six; its new group never committed; it is silent with two waiting.
    assert (r["TH"].recorded, r["TH"].outstanding) == (6, 2)
    assert {cc: r[cc].status for cc in ("BR", "TH")} == {
        "BR": Status.LAGGING,
        "TH": Status.DOWN,
    }


def test_a_missing_sqlite_database_is_refused_and_not_created(tmp_path: Path) -> None:
    from notice_bus.reports.report import open_tracker_database

    path = tmp_path / "typo.db"
    with pytest.raises(ConfigError, match=r"typo\.db"):
        open_tracker_database(f"sqlite:///{path}")
    assert not path.exists()
    with pytest.raises(ConfigError, match="no-such-folder"):
        open_tracker_database(f"sqlite:///{tmp_path}/no-such-folder/tracker.db")
    assert not (tmp_path / "no-such-folder").exists()


def test_a_database_without_the_tracker_tables_is_refused(
    tmp_path: Path, new_postgres_db: Callable[[], str]
) -> None:
    from notice_bus.reports.report import open_tracker_database

    other = tmp_path / "fr.db"  # an adapter's database, say
    sqlite3.connect(other).execute("CREATE TABLE red_notice (id INTEGER)").connection.close()
    with pytest.raises(ConfigError, match=r"fr\.db.*no tracker tables"):
        open_tracker_database(f"sqlite:///{other}")
    empty = new_postgres_db()
    with pytest.raises(ConfigError, match="no tracker tables"):
        open_tracker_database(empty)
    engine = sa.create_engine(empty.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        assert sa.inspect(conn).get_table_names() == []  # nothing made in it
    engine.dispose()


def test_a_tracker_database_opens_for_the_report(
    tmp_path: Path, new_postgres_db: Callable[[], str]
) -> None:
    from notice_bus.reports.report import open_tracker_database

    for url in (f"sqlite:///{tmp_path}/tracker.db", new_postgres_db()):
        make_engine(url, TRACKER_TABLES).dispose()  # as the tracker makes it
        engine = open_tracker_database(url)
        try:
            assert build_report(engine, Settings()) == []
        finally:
            engine.dispose()
