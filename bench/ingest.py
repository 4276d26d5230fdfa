"""Bulk paths: a late country's bootstrap, and the tracker's ingest, each on PostgreSQL.

Bootstrap: HQ holds 58,000 active notices (about today's red-notice corpus); a new country's
topics are created, ``HQ.bootstrap`` sends them all, and the country's adapter loads them into
its PostgreSQL. The figure is notices per second from the adapter's start until the last row
is in. Baseline, same run, same topic: a bare consumer reading every record, decoding it and
COPYing the same rows into the same table in another database. Each is run REPEATS times,
in turn, each into a fresh database: the figures are the medians, with their ranges.

Tracker ingest: the notices and acknowledgements of 196 countries are put on their topics, then
a tracker reads them into PostgreSQL; the figure is acknowledgements (a RECEIVED and a RECORDED
per notice, which adapters send as one RECORDED carrying the time received) per second from
its start until the last one is stored and every notice is marked received and recorded.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from bench.common import REPEATS, drop_topics, say
from notice_bus.bureau.adapter import Adapter
from notice_bus.bureau.sinks.rows import row_of
from notice_bus.bureau.sinks.sql import SqlSink
from notice_bus.bureau.sinks.tables import LOCAL_TABLES, RED_NOTICE
from notice_bus.hq.generate import make_drafts
from notice_bus.hq.publisher import HQ
from notice_bus.runtime.db import make_engine
from notice_bus.runtime.kafka import announce_topics, kafka_config
from notice_bus.runtime.settings import Settings
from notice_bus.runtime.workers import hold_event
from notice_bus.tracker.tables import TRACKER_TABLES
from notice_bus.tracker.workers import TrackerWorkers
from notice_bus.wire.codec import AvroCodec, load_schema
from notice_bus.wire.model import Ack, AckStatus, Action, NoticeEvent, utcnow
from notice_bus.wire.schema_registry import KafkaSchemaStore
from notice_bus.wire.topics import TopicNames, init_topics
from notice_bus.wire.validation import Draft

CORPUS = 58_000


def new_database(url: str, name: str) -> str:
    dsn = sa.make_url(url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return sa.make_url(url).set(database=name).render_as_string(False)


def _count(url: str, table: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


def hq_corpus(hq: HQ, count: int = CORPUS) -> list[Draft]:
    """Put ``count`` generated active notices (every one a broadcast) in ``hq``'s records,
    sent nowhere yet (``relay=False``): a country that joins later gets them by
    ``HQ.bootstrap``. Returns the drafts."""
    started = time.monotonic()
    drafts = make_drafts(count, first_number=100000)
    for i in range(0, count, 2000):
        hq.publish(drafts[i : i + 2000], relay=False)
    say(f"  HQ holds {count:,} active notices ({time.monotonic() - started:.0f} s)")
    return drafts


def load_copy(
    settings: Settings,
    country: str,
    url: str,
    done: Callable[[sa.Connection], bool],
    *,
    hub: str | None = None,
) -> float:
    """Run ``country``'s adapter (a thread of this process) into the database at ``url``
    until ``done`` says so of the copy (asked every 0.25 s); the seconds that took. ``hub``:
    a consumer group of its own, for a second copy from the same topic."""
    adapter = Adapter(settings.with_(batch_size=2000), {country: SqlSink(url)}, hub=hub)
    stop = threading.Event()
    began = time.monotonic()
    thread = threading.Thread(target=adapter.run, args=(stop,), daemon=True)
    thread.start()
    watch = make_engine(url)  # one connection, polled: the adapter shares the CPU with it
    try:
        with watch.connect() as conn:
            while not done(conn):
                conn.rollback()
                if not thread.is_alive():
                    raise RuntimeError(f"{country}'s adapter stopped before its copy was loaded")
                time.sleep(0.25)
        return time.monotonic() - began
    finally:
        watch.dispose()
        stop.set()
        thread.join(60)


def bootstrap(bootstrap_servers: str, pg_url: str, tmp: Path) -> dict[str, Any]:
    settings = Settings(
        bootstrap_servers=bootstrap_servers,
        topic_prefix=f"b{uuid.uuid4().hex[:6]}.boot.",
        partitions=1,
        hq_database_url=f"sqlite:///{tmp}/hq-boot.db",
    )
    init_topics(settings, [])  # no country yet: HQ only records the notices
    with HQ(settings) as hq:
        hq_corpus(hq)
        init_topics(settings, ["ZZ"])
        sent_at = time.monotonic()
        queued = hq.bootstrap("ZZ")
        send_s = time.monotonic() - sent_at
    say(f"  HQ sent {queued:,} notices to ZZ in {send_s:.1f} s ({queued / send_s:,.0f}/s)")

    count = sa.text("SELECT count(*) FROM red_notice")
    ours, base = [], []
    for rep in range(REPEATS):  # each a fresh database, ours and the baseline in turn
        url = new_database(pg_url, f"boot_{uuid.uuid4().hex[:6]}")
        ours.append(
            load_copy(
                settings, "ZZ", url, lambda conn: conn.execute(count).scalar_one() >= queued,
                hub=f"boot{rep}",
            )
        )  # fmt: skip
        base_url = new_database(pg_url, f"base_{uuid.uuid4().hex[:6]}")
        make_engine(base_url, LOCAL_TABLES).dispose()
        base.append(raw_load(settings, base_url, queued))
        say(
            f"  bootstrap #{rep + 1}: {queued / ours[-1]:,.0f}/s ({ours[-1]:.1f} s); raw"
            f" consume + COPY {queued / base[-1]:,.0f}/s ({base[-1]:.1f} s); ratio"
            f" {base[-1] / ours[-1]:.2f}"
        )
    drop_topics(settings)
    rates = sorted(queued / s for s in ours)
    ratios = sorted(b / o for o, b in zip(ours, base, strict=True))
    base_rates = sorted(queued / s for s in base)

    def spread(values: list[float], form: str) -> str:
        return f"{statistics.median(values):{form}} ({values[0]:{form}}-{values[-1]:{form}})"

    say(
        f"bootstrap of {queued:,} notices into PostgreSQL, {len(ours)} runs, median (range):"
        f" {spread(rates, ',.0f')}/s; raw consume + COPY {spread(base_rates, ',.0f')}/s; ratio"
        f" {spread(ratios, '.2f')}; target >= 0.5 in every run"
    )
    return {
        "bootstrap_notices": queued,
        "bootstrap_notices_per_s": round(statistics.median(rates)),
        "bootstrap_baseline_notices_per_s": round(statistics.median(base_rates)),
        "bootstrap_ratio": round(statistics.median(ratios), 2),
        "bootstrap_ratio_range": [round(ratios[0], 2), round(ratios[-1], 2)],
        "bootstrap_runs": len(ours),
        "bootstrap_hq_send_notices_per_s": round(queued / send_s),
    }


def _until_stored(url: str, acks: int, notices: int, timeout_s: float = 600) -> float:
    """When (monotonic) every ack is stored and every notice marked received and recorded,
    looked at every 100 ms."""
    engine = make_engine(url)
    stored = sa.text("SELECT count(*) FROM tracker_ack")
    done = sa.text(
        "SELECT count(*) FROM tracker_sent WHERE recorded_at IS NOT NULL"
        " AND received_at IS NOT NULL"
    )
    deadline = time.monotonic() + timeout_s
    try:
        with engine.connect() as conn:
            while time.monotonic() < deadline:
                if (
                    conn.execute(stored).scalar_one() >= acks
                    and conn.execute(done).scalar_one() >= notices
                ):
                    return time.monotonic()
                conn.rollback()
                time.sleep(0.1)
    finally:
        engine.dispose()
    raise RuntimeError("the tracker did not store every acknowledgement in time")


def raw_load(settings: Settings, url: str, expected: int) -> float:
    """Seconds to read every record of ZZ's topic, decode it and COPY the rows."""
    topic = TopicNames(settings.topic_prefix).notices("ZZ")
    codec = AvroCodec(load_schema("notice_event"), KafkaSchemaStore(settings))
    columns = [c.name for c in RED_NOTICE.c]
    jsons = {"nationalities", "eyes_colors_id", "hairs_id", "languages_spoken_ids"}
    jsons |= {"arrest_warrants", "images"}
    dsn = sa.make_url(url).set(drivername="postgresql").render_as_string(False)
    began = time.monotonic()
    consumer = KafkaConsumer(**kafka_config(settings, "raw-load"), enable_auto_commit=False)
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    seen = 0
    statement = f"COPY red_notice ({', '.join(columns)}) FROM STDIN"
    with psycopg.connect(dsn) as conn, conn.cursor() as cur, cur.copy(statement) as copy:
        while seen < expected:
            for records in consumer.poll(timeout_ms=500, max_records=5000).values():
                for r in records:
                    row = row_of(NoticeEvent.from_avro(codec.decode(r.value)), utcnow())
                    copy.write_row([json.dumps(row[c]) if c in jsons else row[c] for c in columns])
                    seen += 1
    consumer.close()
    return time.monotonic() - began


def tracker_ingest(bootstrap_servers: str, pg_url: str, countries: list[str]) -> dict[str, Any]:
    """Two shapes of the same 196 x 150 notices: acknowledged one event per message, as a
    hub does in live traffic (a poll brings a country one or two records), and in bundles of
    ``BUNDLE`` events, as an adapter catching up does; each by one tracker process and by
    ``WORKERS`` (``notice-bus tracker --workers``)."""
    one = _tracker_run(bootstrap_servers, pg_url, countries, 1, 1)
    live = _tracker_run(bootstrap_servers, pg_url, countries, 1, WORKERS)
    bundled = _tracker_run(bootstrap_servers, pg_url, countries, BUNDLE, WORKERS)
    return {
        "tracker_acks_per_s": live["acks_per_s"],
        "tracker_workers": WORKERS,
        "tracker_one_process_acks_per_s": one["acks_per_s"],
        "tracker_acks": live["acks"],
        "tracker_ack_messages": live["messages"],
        "tracker_bundled_acks_per_s": bundled["acks_per_s"],
        "tracker_bundled_ack_messages": bundled["messages"],
    }


WORKERS = int(os.environ.get("BENCH_TRACKER_WORKERS", "2"))  # one per core
BUNDLE = 100


def _tracker_run(
    bootstrap_servers: str, pg_url: str, countries: list[str], bundle: int, n_workers: int
) -> dict[str, Any]:
    per_country = 150
    settings = Settings(
        bootstrap_servers=bootstrap_servers,
        topic_prefix=f"b{uuid.uuid4().hex[:6]}.track.",
        partitions=1,
    )
    init_topics(settings, countries)
    names = TopicNames(settings.topic_prefix)
    store = KafkaSchemaStore(settings)
    events = AvroCodec(load_schema("notice_event"), store)
    acks = AvroCodec(load_schema("ack"), store)
    producer = KafkaProducer(**kafka_config(settings, "bench-fill"), linger_ms=20)
    announce_topics(producer, [t for c in countries for t in (names.notices(c), names.acks(c))])
    began = time.monotonic()
    drafts = make_drafts(per_country, first_number=200000)
    now = utcnow()
    for draft in drafts:
        event = NoticeEvent(
            notice_id=draft.notice_id,
            version=1,
            action=Action.PUBLISH,
            requesting_country=draft.requesting_country,
            published_at=now,
            target_countries=(),
            person=draft.person,
        )
        payload = events.encode(event.to_avro())
        for cc in countries:
            producer.send(names.notices(cc), key=draft.notice_id.encode(), value=payload)
    messages = 0
    for cc in countries:
        for i in range(0, per_country, bundle):
            first, *rest = drafts[i : i + bundle]
            ack = Ack(
                cc, first.notice_id, 1, AckStatus.RECORDED, utcnow(), f"{cc}@bench",
                received_at=now, also=tuple((d.notice_id, 1) for d in rest),
            )  # fmt: skip
            producer.send(
                names.acks(cc), key=first.notice_id.encode(), value=acks.encode(ack.to_avro())
            )
            messages += 1
    producer.flush()
    producer.close()
    total_acks = 2 * per_country * len(countries)  # RECEIVED and RECORDED per notice
    say(
        f"  {total_acks:,} acknowledgements in {messages:,} messages put on the broker"
        f" ({time.monotonic() - began:.0f} s)"
    )

    url = new_database(pg_url, f"track_{uuid.uuid4().hex[:6]}")
    make_engine(url, TRACKER_TABLES).dispose()
    hold = hold_event()
    workers = TrackerWorkers(settings, n_workers, database_url=url, escalate=False, hold=hold)
    try:
        workers.wait_ready()  # connected, topics not yet read
        began = time.monotonic()
        hold.set()
        took = _until_stored(url, total_acks, per_country * len(countries)) - began
    finally:
        workers.stop()
    drop_topics(settings)
    if _count(url, "tracker_ack") != total_acks:
        raise RuntimeError("the tracker stored more acknowledgements than were sent")
    rate = total_acks / took
    say(
        f"tracker ingest into PostgreSQL, {bundle} event(s) per message, {n_workers}"
        f" process(es): {rate:,.0f} acks/s ({total_acks:,} acks and"
        f" {per_country * len(countries):,} notices in {took:.1f} s); target >= 20,000"
    )
    return {"acks_per_s": round(rate), "acks": total_acks, "messages": messages}
