"""The local three-node cluster (``notice-bus broker --brokers 3``): every partition on three
in-sync replicas, and a node killed (its partitions' leader, or the active controller) costs
no acknowledged write; restarted, it catches up and is in sync again.

One cluster for the module (``kafka_cluster``); every test leaves its three nodes running."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType

from notice_bus.runtime.local_cluster import LocalCluster
from notice_bus.runtime.settings import Settings

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


def write(cluster: LocalCluster, topic: str, values: range) -> None:
    """Each record acknowledged by every in-sync replica (``acks=all``, idempotent)."""
    producer = KafkaProducer(
        bootstrap_servers=cluster.bootstrap_servers, acks="all", enable_idempotence=True
    )
    try:
        for i in values:
            producer.send(topic, key=b"k", value=str(i).encode()).get(timeout=90)
    finally:
        producer.close()


def read(cluster: LocalCluster, topic: str, count: int) -> list[int]:
    """The values of partition 0, from the start, once ``count`` are there."""
    consumer = KafkaConsumer(
        bootstrap_servers=cluster.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        consumer.assign([TopicPartition(topic, 0)])
        values: list[int] = []
        for _ in range(120):
            for records in consumer.poll(timeout_ms=500).values():
                values += [int(r.value) for r in records]
            if len(values) >= count:
                break
        return values
    finally:
        consumer.close()


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


def test_a_killed_leader_loses_no_acknowledged_write_and_rejoins(
    kafka_cluster: LocalCluster,
    cluster_settings: Settings,
    admin: KafkaAdminClient,
    all_nodes_back: None,
) -> None:
    topic = f"{cluster_settings.topic_prefix}failover"
    admin.create_topics({topic: {"num_partitions": 1}}, wait_for_metadata=True)
    kafka_cluster.wait_in_sync([topic])
    write(kafka_cluster, topic, range(0, 20))

    (p,) = partitions(admin, topic)
    leader = p["leader_id"]
    pid = next(n.pid for n in kafka_cluster.nodes if n.node_id == leader)
    kafka_cluster.kill(leader)
    assert next(n.pid for n in kafka_cluster.nodes if n.node_id == leader) is None
    assert pid is not None
    with pytest.raises(ProcessLookupError):  # gone, not stopping
        os.kill(pid, 0)

    # Two replicas left in sync, as many as min.insync.replicas: acks=all writes go on.
    write(kafka_cluster, topic, range(20, 40))
    (p,) = partitions(admin, topic)
    assert p["leader_id"] not in (leader, -1)
    assert leader not in p["isr_nodes"] and len(p["isr_nodes"]) == 2
    assert read(kafka_cluster, topic, 40) == list(range(40))

    kafka_cluster.restart(leader)
    kafka_cluster.wait_in_sync([topic])
    (p,) = partitions(admin, topic)
    assert sorted(p["isr_nodes"]) == [1, 2, 3]


def test_the_quorum_elects_another_controller_when_the_active_one_dies(
    kafka_cluster: LocalCluster,
    cluster_settings: Settings,
    admin: KafkaAdminClient,
    all_nodes_back: None,
) -> None:
    active = kafka_cluster.active_controller()
    assert active in {n.node_id for n in kafka_cluster.nodes}
    kafka_cluster.kill(active)

    # The two controllers left are a majority: they elect one of them.
    deadline = time.monotonic() + 60
    elected = active
    while elected == active and time.monotonic() < deadline:
        elected = kafka_cluster.active_controller()
    assert elected not in (active, -1)
    # Metadata changes (a new topic) and acks=all writes go through it. A new admin client,
    # once the dead node is fenced: kafka-python's sends CreateTopics to a broker KRaft picks
    # at random among those it believes alive, and this one may have picked the dead node.
    kafka_cluster.wait_brokers()
    topic = f"{cluster_settings.topic_prefix}after-election"
    fresh = KafkaAdminClient(**kafka_cluster.admin_config())
    try:
        fresh.create_topics({topic: {"num_partitions": 1}}, wait_for_metadata=True)
    finally:
        fresh.close()
    write(kafka_cluster, topic, range(10))
    assert read(kafka_cluster, topic, 10) == list(range(10))

    kafka_cluster.restart(active)
    kafka_cluster.wait_in_sync([topic])
    assert len(partitions(admin, topic)[0]["isr_nodes"]) == 3
