"""A local broker's own account of where time went (runtime/broker_logs.py), read from a real
broker's files: the request log's split of each request's time, the collector's pauses. And a
throwaway broker keeps its files in memory: on this machine's disk, the kernel's writeback of
the broker's memory-mapped indexes held produce requests for seconds (README, Performance)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType

from notice_bus.runtime.broker_logs import gc_pauses, slow_requests
from notice_bus.runtime.local_broker import LocalBroker
from notice_bus.runtime.local_cluster import LocalCluster
from notice_bus.runtime.scratch import scratch_dir
from notice_bus.wire.topics import TopicNames, init_topics
from tests.conftest import settings_on

MEMORY = Path("/dev/shm")


#: A setting of the module's broker's own, which Kafka's default (500) and ours do not give.
OVERRIDE = {"replica.fetch.wait.max.ms": "25"}


@pytest.fixture(scope="module")
def logging_broker() -> Iterator[LocalBroker]:
    with LocalBroker(request_log=True, overrides=OVERRIDE) as broker:
        yield broker


def test_a_brokers_overrides_are_the_settings_it_runs_with(logging_broker: LocalBroker) -> None:
    admin = KafkaAdminClient(**logging_broker.admin_config())
    try:
        node = str(logging_broker.node_id)
        configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, node)], config_filter="all"
        )["broker"][node]
    finally:
        admin.close()
    assert {name: configs[name]["value"] for name in OVERRIDE} == OVERRIDE


def test_a_cluster_gives_its_overrides_to_every_node() -> None:
    cluster = LocalCluster(overrides={"num.replica.fetchers": "4"})
    try:
        for node in cluster.nodes:
            broker = cluster.node(node.node_id)
            broker._write_config()
            written = (broker.workdir / "server.properties").read_text().splitlines()
            # last, so that Kafka, reading the file in order, keeps this value
            assert written[-1] == "num.replica.fetchers=4"
    finally:
        cluster.stop()


def test_the_request_log_splits_a_produce_requests_time(
    logging_broker: LocalBroker, tmp_path: Path
) -> None:
    settings = settings_on(logging_broker.bootstrap_servers, tmp_path)
    init_topics(settings, ["FR"])
    topic = TopicNames(settings.topic_prefix).notices("FR")
    producer = KafkaProducer(
        bootstrap_servers=logging_broker.bootstrap_servers, client_id="logged", acks="all"
    )
    producer.send(topic, key=b"2026/1", value=b"x").get(timeout=30)
    producer.close()
    # The broker logs a request once its response is sent: the client can have its answer
    # before the line is in the file.
    deadline = time.monotonic() + 10
    while True:
        logged = slow_requests(logging_broker.workdir / "requests.log")
        produced = [r for r in logged if r.api == "PRODUCE"]
        if produced or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert produced, "the broker logged no PRODUCE request"
    last = produced[-1]
    parts = last.queue_ms + last.local_ms + last.remote_ms + last.response_queue_ms + last.send_ms
    assert last.total_ms == pytest.approx(parts, abs=1.0)  # the split adds up to the whole
    assert last.at.tzinfo is not None  # comparable with the clients' and gc.log's clocks
    assert slow_requests(logging_broker.workdir / "requests.log", min_ms=10**7) == []


def test_gc_log_lists_the_jvms_stops(logging_broker: LocalBroker) -> None:
    pauses = gc_pauses(logging_broker.workdir)
    assert pauses, "gc.log holds no collection and no safepoint"
    assert all(p.ms >= 0 and p.at.tzinfo is not None for p in pauses)
    assert [p.at for p in pauses] == sorted(p.at for p in pauses)
    assert all(p.ms >= 5 for p in gc_pauses(logging_broker.workdir, min_ms=5))


def test_no_request_log_unless_asked() -> None:
    broker = LocalBroker()
    try:
        broker._write_config()
        assert "kafka.request.logger" not in (broker.workdir / "log4j2.properties").read_text()
    finally:
        broker.stop()


@pytest.mark.skipif(not MEMORY.is_dir(), reason="no /dev/shm on this machine")
def test_throwaway_brokers_and_clusters_keep_their_files_in_memory(tmp_path: Path) -> None:
    broker, cluster = LocalBroker(), LocalCluster()
    try:
        assert broker.workdir.parent == MEMORY
        assert cluster.workdir.parent == MEMORY
        assert scratch_dir("notice-bus-test-").parent == MEMORY
    finally:
        broker.stop()
        cluster.stop()
    assert not broker.workdir.exists() and not cluster.workdir.exists()
    # A folder someone gives is where the data goes: `notice-bus broker --data DIR` keeps it.
    assert LocalBroker(tmp_path / "kept").workdir == tmp_path / "kept"
