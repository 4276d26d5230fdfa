"""Where a benchmark run happens: a plain broker, a secured one with credentials issued by
``notice-bus pki`` (SCRAM-SHA-512 over TLS for every client, ACLs for everything, HQ's
signatures on every notice and the bureaus' MACs on every acknowledgement), or a plain
three-broker cluster whose topics have three replicas (issue 18)."""

from __future__ import annotations

import os
import statistics
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka.admin import ConfigResource, ConfigResourceType

from notice_bus.runtime.kafka import admin_client
from notice_bus.runtime.local_broker import LocalBroker
from notice_bus.runtime.local_cluster import LocalCluster
from notice_bus.runtime.settings import Settings
from notice_bus.trust.acl import apply_registry
from notice_bus.trust.pki import issue
from notice_bus.wire.topics import TopicNames

#: The hub principal that serves every country of a secured run (``--hub bench``).
HUB = "bench"


@dataclass(frozen=True)
class Cluster:
    """``pki`` None: PLAINTEXT, every client anonymous. Otherwise each part of a run connects
    as its own principal: ``admin`` makes the topics and watches, ``hq`` publishes, and the
    adapters' host is the hub ``hub-bench``."""

    bootstrap: str
    pki: Path | None = None

    @property
    def secured(self) -> bool:
        return self.pki is not None

    def settings(self, principal: str, **overrides: Any) -> Settings:
        """``principal``'s settings on this cluster, ``overrides`` on top."""
        return self.as_(principal, Settings(bootstrap_servers=self.bootstrap)).with_(**overrides)

    def as_(self, principal: str, settings: Settings) -> Settings:
        """``settings`` with ``principal``'s credentials on top (none on a plain cluster)."""
        if self.pki is None:
            return settings
        return settings.overlay(self.pki / principal / "notice-bus.toml")

    def host_env(self) -> dict[str, str]:
        """What the adapters' host process adds to its environment."""
        if self.pki is None:
            return {}
        return {"NOTICE_BUS_CONFIG": str(self.pki / f"hub-{HUB}" / "notice-bus.toml")}

    def host_args(self) -> list[str]:
        return ["--hub", HUB] if self.secured else []


@contextmanager
def plain_cluster() -> Iterator[Cluster]:
    """``KAFKA_BOOTSTRAP_SERVERS``, else a local broker with its data in memory (see
    :func:`~notice_bus.runtime.scratch.scratch_dir`), stopped on the way out: the
    secured run that may follow then has the machine to itself."""
    if bootstrap := os.environ.get("KAFKA_BOOTSTRAP_SERVERS", ""):
        yield Cluster(bootstrap)
        return
    with LocalBroker() as broker:
        yield Cluster(broker.bootstrap_servers)


@contextmanager
def replicated_cluster(brokers: int = 3, heap_mb: int = 512) -> Iterator[Cluster]:
    """``BENCH_CLUSTER_BOOTSTRAP_SERVERS`` (a cluster of ``brokers`` brokers, e.g. compose.yaml's
    three), else a local KRaft cluster of ``brokers`` nodes with ``heap_mb`` of Java heap each,
    its data in memory, stopped on the way out. Its topics get ``min(3, brokers)`` replicas,
    two of which must have a write (``topics init``'s automatic replication);
    :func:`replication` reads that back."""
    if bootstrap := os.environ.get("BENCH_CLUSTER_BOOTSTRAP_SERVERS", ""):
        yield Cluster(bootstrap)
        return
    with LocalCluster(brokers=brokers, heap_mb=heap_mb) as cluster:
        yield Cluster(cluster.bootstrap_servers)


def replication(settings: Settings, countries: Sequence[str]) -> dict[str, object]:
    """The replication of a run's notices and acks topics, as the cluster reports it
    (describe_cluster, describe_topics, describe_configs), not as asked for: the unfenced
    brokers, and per partition the count of replicas, of in-sync replicas and the leader's
    node, per topic its ``min.insync.replicas`` and ``unclean.leader.election.enable``, each
    as {value: how many}."""
    names = TopicNames(settings.topic_prefix)
    topics = [names.notices(c) for c in countries] + [names.acks(c) for c in countries]
    admin = admin_client(settings)
    try:
        brokers = [b for b in admin.describe_cluster()["brokers"] if not b.get("is_fenced")]
        described = admin.describe_topics(topics)
        configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics], config_filter="all"
        )["topic"]
    finally:
        admin.close()
    partitions = [p for t in described if t["name"] in topics for p in t["partitions"]]

    def tally(values: Iterable[object]) -> dict[str, int]:
        return {str(k): n for k, n in sorted(Counter(values).items(), key=lambda kv: str(kv[0]))}

    return {
        "brokers": len(brokers),
        "topics": len({t["name"] for t in described} & set(topics)),
        "partitions": len(partitions),
        "replicas": tally(len(p["replica_nodes"]) for p in partitions),
        "in_sync": tally(len(p["isr_nodes"]) for p in partitions),
        "leaders": tally(p["leader_id"] for p in partitions),
        "min_insync_replicas": tally(configs[t]["min.insync.replicas"]["value"] for t in topics),
        "unclean_leader_election": tally(
            configs[t]["unclean.leader.election.enable"]["value"] for t in topics
        ),
    }


@contextmanager
def secured_cluster(tmp: Path, countries: Sequence[str]) -> Iterator[tuple[Cluster, LocalBroker]]:
    """A secured local broker, and the credentials of admin, HQ and a hub of ``countries``."""
    pki = tmp / "pki"
    issue(pki, hubs={HUB: list(countries)})
    with LocalBroker(pki=pki) as broker:
        cluster = Cluster(broker.bootstrap_servers, pki)
        apply_registry(cluster.settings("admin"))  # the principals' SCRAM users, and grants
        yield cluster, broker


def handshakes(cluster: Cluster, broker: LocalBroker, repeat: int = 10) -> dict[str, float]:
    """Median seconds from a new client to its first answer (the topic list), SCRAM-SHA-512
    over TLS and mutual TLS: what each connection of a restart or a new bureau costs."""
    protocols = {
        "SASL_SSL": {},
        "SSL": {"security_protocol": "SSL", "bootstrap_servers": broker.tls_bootstrap_servers},
    }
    out = {}
    for name, overrides in protocols.items():
        settings = cluster.settings(f"hub-{HUB}", **overrides)
        runs = []
        for _ in range(repeat):
            began = time.perf_counter()
            admin = admin_client(settings)
            admin.list_topics()
            runs.append(time.perf_counter() - began)
            admin.close()
        out[name] = statistics.median(runs)
    return out
