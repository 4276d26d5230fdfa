"""The local three-node cluster (``notice-bus broker --brokers 3``): every partition on three
in-sync replicas, and a node killed (its partitions' leader, or the active controller) costs
no acknowledged write; restarted, it catches up and is in sync again.

The chaos tests run the resilience suite's 2,000-operation workload through HQ, two countries'
adapter processes (PostgreSQL and SQLite) and the tracker while a node is SIGKILLed mid-stream
(the busiest partition leader; the active controller) and restarted 10 s or more later; then
every copy equals HQ's state, every record HQ sent is on its topic once with a RECORDED
acknowledgement, the tracker holds each once and the report is OK. Each prints its figures
(``pytest -s``).

One cluster for the module (``kafka_cluster``); every test leaves its three nodes running."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType

from notice_bus.hq.tables import OUTBOX
from notice_bus.reports.report import Status, build_report
from notice_bus.runtime.db import make_engine
from notice_bus.runtime.local_cluster import LocalCluster
from notice_bus.runtime.settings import Settings
from notice_bus.tracker.ingest import Tracker
from notice_bus.tracker.tables import SENT, TRACKER_TABLES
from notice_bus.wire.codec import AvroCodec, load_schema
from notice_bus.wire.manifest import kind_of
from notice_bus.wire.model import Ack, AckStatus
from notice_bus.wire.schema_registry import KafkaSchemaStore
from notice_bus.wire.topics import TopicNames, init_topics
from tests.support.workload import Workload, recorded_counts
from tests.test_resilience import adapter_process, assert_exact, show_on_failure, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.cluster]


@pytest.fixture
def admin(kafka_cluster: LocalCluster) -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(**kafka_cluster.admin_config())
    yield client
    client.close()


@pytest.fixture
def all_nodes_back(kafka_cluster: LocalCluster) -> Iterator[None]:
    """Whatever the test killed runs again after it."""
    yield
    for node in kafka_cluster.nodes:
        if node.pid is None:
            kafka_cluster.restart(node.node_id)


def partitions(admin: KafkaAdminClient, topic: str) -> list[dict[str, Any]]:
    (described,) = admin.describe_topics([topic])
    return sorted(described["partitions"], key=lambda p: p["partition_index"])


def test_three_brokers_and_every_partition_on_three_in_sync_replicas(
    kafka_cluster: LocalCluster, cluster_settings: Settings, admin: KafkaAdminClient
) -> None:
    nodes = kafka_cluster.nodes
    assert [n.node_id for n in nodes] == [1, 2, 3]
    assert len({n.port for n in nodes}) == 3 and all(n.pid for n in nodes)
    assert kafka_cluster.bootstrap_servers == ",".join(f"127.0.0.1:{n.port}" for n in nodes)
    described = admin.describe_cluster()
    assert described["cluster_id"] == kafka_cluster.cluster_id
    assert sorted((b["broker_id"], b["port"]) for b in described["brokers"]) == [
        (n.node_id, n.port) for n in nodes
    ]

    # No replication factor asked: the cluster's default, three.
    topic = f"{cluster_settings.topic_prefix}spread"
    admin.create_topics({topic: {"num_partitions": 3}}, wait_for_metadata=True)
    kafka_cluster.wait_in_sync([topic])
    for p in partitions(admin, topic):
        assert sorted(p["replica_nodes"]) == sorted(p["isr_nodes"]) == [1, 2, 3]
    configs = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all"
    )["topic"][topic]
    assert configs["min.insync.replicas"]["value"] == "2"
    assert configs["unclean.leader.election.enable"]["value"] == "false"

    # Three nodes share this host's two cores: fewer threads each than Kafka's defaults.
    node = str(nodes[0].node_id)
    broker = admin.describe_configs(
        [ConfigResource(ConfigResourceType.BROKER, node)], config_filter="all"
    )["broker"][node]
    threads = ("num.network.threads", "num.io.threads", "background.threads")
    assert {name: broker[name]["value"] for name in threads} == dict.fromkeys(threads, "2")


# --- chaos: the resilience suite's workload while a node is SIGKILLed ----------------------------

COUNTRIES = ("FR", "TH")  # FR's copy in PostgreSQL, TH's in SQLite


@dataclass
class Tally:
    """What one chaos test read back from the topics, against what HQ sent."""

    operations: int = 0
    notice_records: int = 0
    notice_topics: int = 0
    recorded_acks: int = 0
    ack_messages: int = 0
    lost: int = 0
    doubled: int = 0
    acks_repeated: int = 0
    per_country: dict[str, int] = field(default_factory=dict)


def notice_topics(settings: Settings) -> list[str]:
    names = TopicNames(settings.topic_prefix)
    return [names.notices(cc) for cc in COUNTRIES]


def prefix_topics(admin: KafkaAdminClient, settings: Settings) -> list[str]:
    return sorted(t for t in admin.list_topics() if t.startswith(settings.topic_prefix))


def leaders(admin: KafkaAdminClient, topics: list[str]) -> Counter[int]:
    """How many partitions of ``topics`` each node leads."""
    return Counter(p["leader_id"] for t in topics for p in partitions(admin, t))


def read_topic(settings: Settings, topic: str) -> list[Any]:
    """Every record of ``topic``, from the start to the end offsets of now."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers.split(","),
        group_id=None,
        enable_auto_commit=False,
    )
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        records: list[Any] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < end[tp] for tp in tps):
            assert time.monotonic() < deadline, f"{topic}: not read to its end in 60 s"
            for batch in consumer.poll(timeout_ms=500).values():
                records += batch
        return records
    finally:
        consumer.close()


def sent_by_hq(settings: Settings, codec: AvroCodec) -> dict[str, set[tuple[str, int]]]:
    """Per notices topic, the (notice id, version) of every record HQ's outbox sent there."""
    engine = sa.create_engine(settings.hq_database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(OUTBOX.c.topic, OUTBOX.c.payload, OUTBOX.c.sent_at))
            sent: dict[str, set[tuple[str, int]]] = defaultdict(set)
            for r in rows:
                assert r.sent_at is not None, f"left unsent in HQ's outbox: {r.topic}"
                event = codec.decode(r.payload)
                sent[r.topic].add((event["notice_id"], event["version"]))
    finally:
        engine.dispose()
    return sent


def tracker_sent(settings: Settings, country: str) -> list[tuple[str, int]]:
    engine = sa.create_engine(settings.tracker_database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(SENT.c.notice_id, SENT.c.version).where(SENT.c.country == country)
            ).all()
    finally:
        engine.dispose()
    return [(r.notice_id, r.version) for r in rows]


def check_topics(settings: Settings, tally: Tally) -> None:
    """Every record HQ sent is on its notices topic once, and every one of them has a RECORDED
    acknowledgement on the country's acks topic; the tracker holds each once."""
    names = TopicNames(settings.topic_prefix)
    store = KafkaSchemaStore(settings)
    notice_codec = AvroCodec(load_schema("notice_event"), store)
    ack_codec = AvroCodec(load_schema("ack"), store)
    sent = sent_by_hq(settings, notice_codec)
    assert set(sent) == set(notice_topics(settings))
    for cc in COUNTRIES:
        expected = sent[names.notices(cc)]
        on_topic = Counter(
            (e["notice_id"], e["version"])
            for e in (notice_codec.decode(r.value) for r in read_topic(settings, names.notices(cc)))
        )
        lost = expected - set(on_topic)
        doubled = {k: n for k, n in on_topic.items() if n > 1}
        assert not lost, (
            f"{cc}: {len(lost)} records HQ sent are not on its topic: {sorted(lost)[:5]}"
        )
        assert set(on_topic) == expected, f"{cc}: records on the topic HQ never sent"
        # HQ's producer retries a send that met the dead leader itself, and being idempotent
        # writes it once; HQ sends an outbox row again only after a whole relay failed, which
        # an outage shorter than the producer's waits never makes. So nothing twice.
        assert not doubled, f"{cc}: records written twice: {sorted(doubled.items())[:5]}"

        recorded: Counter[tuple[str, int]] = Counter()
        for r in read_topic(settings, names.acks(cc)):
            if kind_of(r.headers) is not None:
                continue  # a copy check: none is sent here
            ack = Ack.from_avro(ack_codec.decode(r.value))
            if ack.status is AckStatus.RECORDED:
                tally.ack_messages += 1
                recorded.update(ack.events())
        unacked = expected - set(recorded)
        assert not unacked, f"{cc}: no RECORDED on the acks topic for {sorted(unacked)[:5]}"
        assert set(recorded) == expected, f"{cc}: RECORDED for a record HQ never sent"
        # The tracker holds every event sent, and its RECORDED, once.
        assert Counter(tracker_sent(settings, cc)) == Counter(expected)
        assert recorded_counts(settings, cc) == dict.fromkeys(expected, 1)

        tally.per_country[cc] = len(expected)
        tally.notice_records += sum(on_topic.values())
        tally.notice_topics += 1
        tally.recorded_acks += len(recorded)
        tally.lost += len(lost) + len(unacked)
        tally.doubled += sum(n - 1 for n in doubled.values())
        # An adapter that lost its group coordinator may read a batch again and acknowledge
        # it again: harmless, since the tracker keeps one row per event. Reported, not hidden.
        tally.acks_repeated += sum(n - 1 for n in recorded.values())


def check_report(settings: Settings, tally: Tally) -> str:
    """The report says what happened: every country sent and recorded all, and its status is
    what its lag says (OK, or LAGGING past the threshold)."""
    engine = make_engine(settings.tracker_database_url, TRACKER_TABLES)
    try:
        report = {r.country: r for r in build_report(engine, settings)}
    finally:
        engine.dispose()
    assert sorted(report) == list(COUNTRIES)
    for cc, row in report.items():
        assert (row.outstanding, row.rejected) == (0, 0), row
        assert row.sent == row.recorded == tally.per_country[cc], row
        # Everything is recorded; the status is what the lag says. A node killed mid-stream
        # can hold a twentieth of a country's notices past the threshold (the group's
        # coordinator moves): then the report must say LAGGING, not OK.
        late = (row.p95_lag_s or 0) > settings.lag_threshold_s
        assert row.status is (Status.LAGGING if late else Status.OK), row
    return ", ".join(
        f"{cc} {r.status.value} {r.recorded:,}/{r.sent:,} recorded, {r.outstanding} outstanding,"
        f" p95 lag {r.p95_lag_s or 0:.1f} s"
        for cc, r in sorted(report.items())
    )


def start_tracker(settings: Settings) -> tuple[threading.Thread, threading.Event]:
    tracker = Tracker(settings)
    stop = threading.Event()
    thread = threading.Thread(target=tracker.run, args=(stop,), daemon=True)
    thread.start()
    return thread, stop


def chaos(
    name: str,
    cluster: LocalCluster,
    settings: Settings,
    admin: KafkaAdminClient,
    urls: dict[str, str],
    log: Path,
    disrupt: Callable[[Workload], str],
) -> Tally:
    """Two countries' adapter processes and the tracker on the cluster while the resilience
    suite's 2,000-operation workload runs and ``disrupt`` kills a node and restarts it; then
    every copy, topic, acknowledgement and the report are checked, and the figures printed."""
    created = init_topics(settings, COUNTRIES)
    assert len(created) == 2 + 8 * len(COUNTRIES)
    kafka_cluster_in_sync(cluster, admin, settings)
    fr = TopicNames(settings.topic_prefix).notices("FR")
    for p in partitions(admin, fr):  # RF 3 and min.insync.replicas 2, as init_topics chose
        assert len(p["replica_nodes"]) == len(p["isr_nodes"]) == 3
    configs = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, fr)], config_filter="all"
    )
    assert configs["topic"][fr]["min.insync.replicas"]["value"] == "2"
    thread, stop = start_tracker(settings)
    adapters = {cc: adapter_process(settings, cc, url, log=log) for cc, url in urls.items()}
    try:
        for proc in adapters.values():
            wait_until(lambda p=proc: f":{p.pid} consuming" in log.read_text(), 60, "adapter up")
        work = Workload(settings, notices=1300, updates=550, cancels=200, rounds=25, pause_s=1.0)
        work.start()
        what = disrupt(work)
        work.join(240)
        assert not work.is_alive(), "the workload did not finish in 240 s"
        assert work.error is None, work.error
        assert work.events >= 2000
        # The restarted node catches up on every topic of the test.
        kafka_cluster_in_sync(cluster, admin, settings)
        for cc, url in urls.items():
            assert_exact(settings, cc, url)
        tally = Tally(operations=work.events)
        check_topics(settings, tally)
        said = check_report(settings, tally)
        # The adapters rode it out: the processes started before the kill are the ones there.
        assert all(proc.poll() is None for proc in adapters.values()), "an adapter died"
    finally:
        codes = [stop_process(proc) for proc in adapters.values()]
        tracker_alive = thread.is_alive()
        stop.set()
        thread.join(30)
    assert codes == [0] * len(adapters)
    assert tracker_alive and not thread.is_alive(), "the tracker died, or did not stop"
    print(
        f"\nchaos {name}: {what}; {tally.operations:,} operations, {tally.notice_records:,}"
        f" notice records on {tally.notice_topics} topics"
        f" ({', '.join(f'{cc} {n:,}' for cc, n in tally.per_country.items())}),"
        f" {tally.recorded_acks:,} RECORDED"
        f" acks in {tally.ack_messages} messages, {tally.lost} lost, {tally.doubled} doubled"
        f" ({tally.acks_repeated} acks repeated by a replay, kept once by the tracker);"
        f" report: {said}"
    )
    return tally


def stop_process(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then SIGKILL if it has not ended within 60 s; its exit code."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def kafka_cluster_in_sync(
    cluster: LocalCluster, admin: KafkaAdminClient, settings: Settings
) -> None:
    cluster.wait_in_sync(prefix_topics(admin, settings), timeout_s=120)


class CreateRetries(logging.Handler):
    """Counts init_topics' retried CreateTopics attempts (logged by retry_transient)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += record.getMessage().startswith("creating topics:")


def topics_init_now(settings: Settings, deployments: int = 4) -> int:
    """``topics init`` for ``deployments`` other deployments (topic prefixes of their own, which
    this one's HQ never sees), one after the other, while a node is dead and not yet fenced:
    the admin client's CreateTopics goes to a broker the controllers pick at random among
    those they believe alive, the dead one included, until they fence it (9 s). Each must
    succeed; returns how many attempts failed on the way and were retried."""
    retries = CreateRetries()
    logger = logging.getLogger("notice_bus.kafka")
    logger.addHandler(retries)
    try:
        for i in range(deployments):
            other = settings.with_(topic_prefix=f"{settings.topic_prefix}late{i}.")
            assert len(init_topics(other, ["ID"])) == 10
    finally:
        logger.removeHandler(retries)
    return retries.count


def mid_stream(work: Workload, events: int = 300) -> None:
    wait_until(lambda: work.events >= events or not work.is_alive(), 60, "workload under way")
    assert work.is_alive(), work.error


@pytest.fixture
def chaos_urls(new_postgres_db: Callable[[], str], tmp_path: Path) -> dict[str, str]:
    return {"FR": new_postgres_db(), "TH": f"sqlite:///{tmp_path}/th.db"}


def test_chaos_the_busiest_leader_killed_and_restarted_mid_stream(
    kafka_cluster: LocalCluster,
    cluster_settings: Settings,
    admin: KafkaAdminClient,
    chaos_urls: dict[str, str],
    tmp_path: Path,
    all_nodes_back: None,
) -> None:
    def disrupt(work: Workload) -> str:
        mid_stream(work)
        topics = notice_topics(cluster_settings)
        led = leaders(admin, topics)
        # Ties: not the active controller (the other test kills that one), then the lowest id.
        active = kafka_cluster.active_controller()
        victim = max(sorted(led), key=lambda n: (led[n], n != active, -n))
        pid = next(n.pid for n in kafka_cluster.nodes if n.node_id == victim)
        at_kill = work.events
        kafka_cluster.kill(victim)
        killed = time.monotonic()
        assert pid is not None
        with pytest.raises(ProcessLookupError):  # gone, not stopping
            os.kill(pid, 0)
        retried = topics_init_now(cluster_settings)
        # Once it is fenced, its partitions are led by the two others, both in sync: as many
        # as min.insync.replicas, so acks=all writes go on.
        kafka_cluster.wait_brokers()
        for t in topics:
            for p in partitions(admin, t):
                assert p["leader_id"] not in (victim, -1), p
                assert victim not in p["isr_nodes"] and len(p["isr_nodes"]) == 2, p
        time.sleep(max(0.0, killed + 10 - time.monotonic()))
        down_s = time.monotonic() - killed
        kafka_cluster.restart(victim)
        return (
            f"node {victim}, leader of {led[victim]} of {sum(led.values())} notices partitions,"
            f" killed after {at_kill} operations, topics init x4 right after ({retried}"
            f" CreateTopics retried), restarted {down_s:.0f} s later (back after"
            f" {work.events} operations)"
        )

    log = tmp_path / "adapters.log"
    with show_on_failure(log):
        chaos("broker-kill", kafka_cluster, cluster_settings, admin, chaos_urls, log, disrupt)


def test_chaos_the_active_controller_killed_and_restarted_mid_stream(
    kafka_cluster: LocalCluster,
    cluster_settings: Settings,
    admin: KafkaAdminClient,
    chaos_urls: dict[str, str],
    tmp_path: Path,
    all_nodes_back: None,
) -> None:
    def disrupt(work: Workload) -> str:
        mid_stream(work)
        active = kafka_cluster.active_controller()
        at_kill = work.events
        kafka_cluster.kill(active)
        killed = time.monotonic()
        # The two controllers left are a majority: they elect one of them.
        deadline = killed + 60
        elected = active
        while elected == active and time.monotonic() < deadline:
            elected = kafka_cluster.active_controller()
        assert elected not in (active, -1)
        # Metadata changes go through the new controller: another deployment's topics, made
        # right after the election, while the dead node may not be fenced yet.
        elected_s = time.monotonic() - killed
        retried = topics_init_now(cluster_settings)
        time.sleep(max(0.0, killed + 10 - time.monotonic()))
        down_s = time.monotonic() - killed
        kafka_cluster.restart(active)
        return (
            f"controller {active} killed after {at_kill} operations, {elected} elected in"
            f" {elected_s:.1f} s, topics init x4 right after ({retried} CreateTopics retried),"
            f" restarted {down_s:.0f} s later (back after {work.events} operations)"
        )

    log = tmp_path / "adapters.log"
    with show_on_failure(log):
        chaos("controller-kill", kafka_cluster, cluster_settings, admin, chaos_urls, log, disrupt)
