"""A lane holds only itself: a hung or absent local system, a mistyped answer in a bureau's
table, a reminder that cannot be surfaced, a rebalance, or an update that no longer addresses
the country never stops the other countries, the process, or the finished work. On the real
broker, with real PostgreSQL and SQLite."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from kafka import KafkaProducer

from notice_bus.bureau.adapter import Adapter
from notice_bus.bureau.sinks.sql import SqlSink
from notice_bus.bureau.sinks.tables import LOCAL_REMINDER, LOCAL_RESPONSE
from notice_bus.hq.generate import make_drafts
from notice_bus.reports.report import build_report
from notice_bus.runtime.kafka import kafka_config
from notice_bus.runtime.settings import Settings
from notice_bus.tracker.tables import ACK
from notice_bus.wire.codec import AvroCodec, load_schema
from notice_bus.wire.model import NOT_ADDRESSED, Action, Overdue, Reminder, utcnow
from notice_bus.wire.schema_registry import KafkaSchemaStore
from notice_bus.wire.topics import TopicNames
from tests.conftest import Bus
from tests.factories import PERSON, draft, event, local_rows
from tests.support.tcp_proxy import TcpProxy
from tests.test_end_to_end import send_raw

pytestmark = pytest.mark.kafka


def _count(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM red_notice")).scalar_one())
    finally:
        engine.dispose()


def _remind(settings: Settings, country: str, notice_id: str) -> Reminder:
    now = utcnow()
    reminder = Reminder(
        country, notice_id, 1, Overdue.NOT_RECORDED, now - timedelta(hours=1), now, "overdue"
    )
    codec = AvroCodec(load_schema("reminder"), KafkaSchemaStore(settings))
    producer = KafkaProducer(**kafka_config(settings, "test-hq"))
    producer.send(
        TopicNames(settings.topic_prefix).reminders(country),
        key=notice_id.encode(),
        value=codec.encode(reminder.to_avro()),
    ).get(30)
    producer.close()
    return reminder


def test_a_hung_local_system_holds_only_its_own_country(
    make_bus: Callable[..., Bus], new_postgres_db: Callable[[], str], tmp_path: Path
) -> None:
    bus = make_bus(["FR", "TH"])
    fr_url, th_url = new_postgres_db(), f"sqlite:///{tmp_path}/th.db"
    hub = Adapter(bus.settings, {"FR": SqlSink(fr_url), "TH": SqlSink(th_url)}, hub="t")
    bus.adapters["hub"] = hub
    bus.hq.publish(make_drafts(3))
    bus.pump(lambda: _count(fr_url) == 3 and _count(th_url) == 3)

    # FR's database hangs: a transaction of its own holds the table, every write waits.
    locker = sa.create_engine(fr_url)
    conn = locker.connect()
    tx = conn.begin()
    conn.execute(sa.text("LOCK TABLE red_notice IN ACCESS EXCLUSIVE MODE"))
    released = threading.Event()

    def release() -> None:
        if not released.is_set():
            released.set()
            tx.rollback()
            conn.close()

    timer = threading.Timer(25, release)  # the old code's step waits for it
    timer.start()
    try:
        bus.hq.publish(make_drafts(5, first_number=30000))
        start, longest = time.monotonic(), 0.0
        while _count(th_url) < 8 and time.monotonic() - start < 15:
            began = time.monotonic()
            hub.step()
            longest = max(longest, time.monotonic() - began)
        waited = time.monotonic() - start
        assert _count(th_url) == 8 and not released.is_set(), "TH waited for FR's database"
        assert waited < 15 and longest < 2.0, f"a step took {longest:.1f} s"
    finally:
        timer.cancel()
        release()
    bus.pump(lambda: _count(fr_url) == 8, timeout_s=30)
    locker.dispose()


def test_a_reminder_for_a_country_that_is_down_waits_with_it_and_is_kept_once(
    make_bus: Callable[..., Bus], new_postgres_db: Callable[[], str], tmp_path: Path
) -> None:
    bus = make_bus(["FR", "TH"], retry_attempts=2)
    url = sa.make_url(new_postgres_db())
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        fr_url = url.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
        th_url = f"sqlite:///{tmp_path}/th.db"
        hub = Adapter(bus.settings, {"FR": SqlSink(fr_url), "TH": SqlSink(th_url)}, hub="t")
        bus.adapters["hub"] = hub
        bus.hq.publish(make_drafts(3))
        bus.pump(lambda: _count(fr_url) == 3 and _count(th_url) == 3)
        proxy.cut()
        reminder = _remind(bus.settings, "FR", make_drafts(1)[0].notice_id)
        bus.hq.publish(make_drafts(5, first_number=30000))
        bus.pump(lambda: hub.holding and _count(th_url) == 8)  # TH goes on
        time.sleep(2)  # FR's retries come and go meanwhile
        for _ in range(10):
            hub.step()
        proxy.restore()
        bus.pump(lambda: not hub.holding and _count(fr_url) == 8, timeout_s=60)
        engine = sa.create_engine(fr_url)
        with engine.connect() as conn:
            texts = [r.text for r in conn.execute(sa.select(LOCAL_REMINDER))]
        engine.dispose()
        assert texts == [reminder.text]


def test_a_mistyped_answer_stays_unsent_and_the_adapter_goes_on(
    make_bus: Callable[..., Bus], tmp_path: Path
) -> None:
    bus = make_bus(["FR"])
    url = f"sqlite:///{tmp_path}/fr.db"
    bus.adapter("FR", url)
    bus.hq.publish([draft("2026/91"), draft("2026/92")])
    bus.pump(lambda: _count(url) == 2)
    local = sa.create_engine(url)
    with local.begin() as conn:  # officers type answers in the bureau's own system
        for notice_id, answer in (("2026/91", "located"), ("2026/92", "LOCATED")):
            conn.execute(
                sa.insert(LOCAL_RESPONSE).values(
                    notice_id=notice_id, answer=answer, responder="officer", answered_at=utcnow()
                )
            )

    def answered() -> bool:
        return [r.answered for r in build_report(bus.tracker.engine, bus.settings)] == [1]

    bus.pump(answered)
    bus.hq.publish([draft("2026/93")])
    bus.pump(lambda: _count(url) == 3)  # the adapter lives on
    with local.connect() as conn:
        query = sa.select(LOCAL_RESPONSE.c.answer, LOCAL_RESPONSE.c.sent_at)
        sent = {r.answer: r.sent_at for r in conn.execute(query)}
    local.dispose()
    assert sent["located"] is None and sent["LOCATED"] is not None


def test_an_update_that_no_longer_addresses_the_country_withdraws_its_copy(
    make_bus: Callable[..., Bus], tmp_path: Path
) -> None:
    bus = make_bus(["FR", "DE"])
    url = f"sqlite:///{tmp_path}/fr.db"
    bus.adapter("FR", url)
    n = "2026/77"
    send_raw(
        bus.settings,
        "FR",
        [
            event(n, 1, target_countries=("DE", "FR")),
            event(n, 2, Action.UPDATE, target_countries=("DE",)),  # FR dropped
        ],
    )
    bus.pump(lambda: n in local_rows(url) and local_rows(url)[n].version == 2)
    row = local_rows(url)[n]
    assert (row.status, row.withdrawn_reason) == ("WITHDRAWN", NOT_ADDRESSED)

    send_raw(bus.settings, "FR", [event(n, 3, Action.UPDATE, target_countries=("FR",))])
    bus.pump(lambda: local_rows(url)[n].version == 3)
    row = local_rows(url)[n]
    assert (row.status, row.name) == ("ACTIVE", PERSON.name)  # addressed again

    send_raw(
        bus.settings,
        "FR",
        [
            event(n, 4, Action.CANCEL, target_countries=("DE",), reason="arrested"),
            event(n, 5, Action.UPDATE, target_countries=("FR",)),  # after a cancel: never
        ],
    )
    bus.pump(lambda: local_rows(url)[n].version >= 4 and bool(_recorded(bus, n, 5)))
    row = local_rows(url)[n]
    assert (row.status, row.withdrawn_reason) == ("WITHDRAWN", "arrested")
    assert _recorded(bus, n, 2) and _recorded(bus, n, 4)


def _recorded(bus: Bus, notice_id: str, version: int) -> list[Any]:
    with bus.tracker.engine.connect() as conn:
        query = sa.select(ACK).where(
            ACK.c.notice_id == notice_id, ACK.c.version == version, ACK.c.status == "RECORDED"
        )
        return list(conn.execute(query))


def test_finished_work_is_committed_when_partitions_are_revoked(
    make_bus: Callable[..., Bus], tmp_path: Path
) -> None:
    bus = make_bus(["FR"])
    urls = [f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db"]
    # A's acknowledgements wait 8 s in its producer before they go out, so a rebalance comes
    # while its last batch is written but not yet confirmed, let alone committed.
    slow = KafkaProducer(**kafka_config(bus.settings, "test-slow"), linger_ms=8000)
    a = Adapter(bus.settings, {"FR": SqlSink(urls[0])}, producer=slow, adapter_id="A")
    b = Adapter(bus.settings, {"FR": SqlSink(urls[1])}, adapter_id="B")
    try:
        while not a._consumer.assignment():
            a.step()
        bus.hq.publish(make_drafts(30))
        deadline = time.monotonic() + 30
        while _count(urls[0]) < 30 and time.monotonic() < deadline:
            a.step()
        assert _count(urls[0]) == 30
        stop = threading.Event()

        def run_b() -> None:
            while not stop.is_set():
                b.step()

        joiner = threading.Thread(target=run_b, daemon=True)
        joiner.start()
        time.sleep(4)  # B asks to join; A hears of the rebalance from its heartbeat
        deadline = time.monotonic() + 40
        while not b._consumer.assignment() and time.monotonic() < deadline:
            a.step()
        assert b._consumer.assignment(), "B never got partitions"
        for _ in range(30):
            a.step()
        stop.set()
        joiner.join(30)
        assert _count(urls[1]) == 0, "B wrote again what A had finished"
    finally:
        a.close()
        b.close()
        slow.close()
