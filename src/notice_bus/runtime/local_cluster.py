"""A local Apache Kafka cluster: three (up to five) :class:`LocalBroker` nodes on 127.0.0.1.

Each node is a combined KRaft broker and controller (node ids 1..N) with its own data folder
(``WORKDIR/node-N``) and ports; the controllers form one static quorum
(``controller.quorum.voters`` lists them all), so the cluster lives while a majority of the
nodes does. Topics get three replicas and a write acknowledged by all in-sync replicas needs two
of them (``min.insync.replicas=2``, internal topics alike); no replica that missed writes
becomes leader (``unclean.leader.election.enable=false``). So one node may crash, be killed
(:meth:`LocalCluster.kill`) or restart (:meth:`LocalCluster.restart`) while producers with
``acks=all`` carry on.

As a single broker does, a cluster started again on its folder is the same cluster: every node
keeps the cluster id, its data and its ports there.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from notice_bus.errors import BrokerSetupError, ConfigError
from notice_bus.runtime.local_broker import LocalBroker
from notice_bus.runtime.scratch import scratch_dir

T = TypeVar("T")
#: The sizes of a cluster: three nodes is the least that outlives the loss of one.
SIZES = range(3, 6)


@dataclass(frozen=True)
class Node:
    """One node as it is now: its client port, and its Java process's id while it runs."""

    node_id: int
    port: int
    pid: int | None


class LocalCluster:
    """Start with :meth:`start` (or ``with``); :attr:`bootstrap_servers` lists every node."""

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        brokers: int = 3,
        heap_mb: int = 512,
        port: int | None = None,
        pki: Path | None = None,
        overrides: Mapping[str, str] | None = None,
    ) -> None:
        """``workdir``: a folder to keep the nodes' data in (``node-1`` ...), default a
        temporary one in memory (:func:`~notice_bus.runtime.scratch.scratch_dir`),
        removed by :meth:`stop`. ``heap_mb``: each node's Java heap. ``port``:
        node 1's client port, node N's is ``port + N - 1``; default the ones kept, else free
        ones. ``pki``: a folder of ``notice-bus pki``'s, as for :class:`LocalBroker`: every
        node then has the broker's certificate, and they talk to one another over mutual TLS.
        ``overrides``: Kafka settings of your own for every node, as for :class:`LocalBroker`."""
        if brokers not in SIZES:
            raise ConfigError(
                f"a local cluster has {SIZES.start} to {SIZES.stop - 1} brokers (a quorum that"
                f" outlives the loss of one), not {brokers}"
            )
        self._own_dir = workdir is None
        self.workdir = workdir or scratch_dir("notice-bus-cluster-")
        self._check_kept(brokers)
        self._overrides = dict(overrides or {})
        self._nodes: dict[int, LocalBroker] = {}
        taken: set[int] = set()
        cluster_id: str | None = None
        for n in range(1, brokers + 1):
            node = self._node(n, brokers, heap_mb, port and port + n - 1, pki, cluster_id, taken)
            cluster_id = cluster_id or node.cluster_id
            if node.cluster_id != cluster_id:
                raise BrokerSetupError(
                    f"{node.workdir} belongs to cluster {node.cluster_id}, not {cluster_id}"
                )
            self._nodes[n] = node
        voters = ",".join(f"{n}@127.0.0.1:{b.controller_port}" for n, b in self._nodes.items())
        for node in self._nodes.values():
            node.voters = voters
        self.cluster_id: str = cluster_id or ""

    def _node(
        self,
        n: int,
        brokers: int,
        heap_mb: int,
        port: int | None,
        pki: Path | None,
        cluster_id: str | None,
        taken: set[int],
    ) -> LocalBroker:
        """Node ``n``, on ports no other node has (free ports are picked before any is bound,
        so two nodes could draw the same one)."""
        for _ in range(10):
            node = LocalBroker(
                self.workdir / f"node-{n}",
                heap_mb=heap_mb,
                port=port,
                pki=pki,
                node_id=n,
                cluster_id=cluster_id,
                replicas=brokers,
                overrides=self._overrides,
            )
            ports = {node.port, node.tls_port, node.controller_port}
            if len(ports) == 3 and not ports & taken:
                break
        taken |= ports
        return node

    def _check_kept(self, brokers: int) -> None:
        if (self.workdir / "data" / "meta.properties").exists():
            raise ConfigError(f"{self.workdir} holds a single broker's data; start it with one")
        kept = [p for p in self.workdir.glob("node-*") if (p / "data" / "meta.properties").exists()]
        if kept and len(kept) != brokers:
            raise ConfigError(
                f"{self.workdir} holds a cluster of {len(kept)} brokers; start it with"
                f" {len(kept)}, not {brokers}"
            )

    @property
    def bootstrap_servers(self) -> str:
        """Every node's client listener, comma-separated."""
        return ",".join(node.bootstrap_servers for node in self._nodes.values())

    @property
    def tls_bootstrap_servers(self) -> str:
        """When secured, every node's mutual-TLS listener."""
        return ",".join(node.tls_bootstrap_servers for node in self._nodes.values())

    @property
    def nodes(self) -> list[Node]:
        return [Node(n, b.port, b.pid) for n, b in self._nodes.items()]

    def node(self, node_id: int) -> LocalBroker:
        try:
            return self._nodes[node_id]
        except KeyError:
            raise ConfigError(f"no node {node_id}: the nodes are {sorted(self._nodes)}") from None

    def admin_config(self) -> dict[str, object]:
        """kafka-python options of a client that may do anything, bootstrapped on every node."""
        return {**self.node(1).admin_config(), "bootstrap_servers": self.bootstrap_servers}

    def start(self, timeout_s: float = 180.0) -> str:
        """Launch every node, then wait: none is ready before a majority of them runs."""
        deadline = time.monotonic() + timeout_s
        try:
            for node in self._nodes.values():
                node.launch()
            for node in self._nodes.values():
                node.wait_ready(deadline - time.monotonic())
            self.wait_brokers(deadline - time.monotonic())
        except BaseException:  # Ctrl-C included: the nodes run in sessions of their own
            self.stop()
            raise
        return self.bootstrap_servers

    def stop(self, timeout_s: float = 20.0, *, keep_data: bool = False) -> None:
        """Shut every node down at once, each with a controlled shutdown, while the quorum
        still stands (one after the other, the last would have none); ``keep_data`` lets
        :meth:`start` bring the cluster back as it was. A node whose shutdown the controllers
        did not approve before the others left waits for a quorum that is gone (Kafka gives
        up after 5 minutes): killed after ``timeout_s``; it recovers its logs when started."""
        with ThreadPoolExecutor(len(self._nodes)) as pool:
            list(pool.map(lambda node: node.stop(timeout_s, keep_data=True), self._nodes.values()))
        if self._own_dir and not keep_data:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def kill(self, node_id: int) -> None:
        """SIGKILL node ``node_id``: its process is gone when this returns; its data stays."""
        self.node(node_id).kill()

    def restart(self, node_id: int, timeout_s: float = 90.0) -> None:
        """Start node ``node_id`` again on its data and ports, until the cluster lists it."""
        node = self.node(node_id)
        if node.pid is not None:
            raise ConfigError(f"node {node_id} is running")
        deadline = time.monotonic() + timeout_s
        node.launch()
        node.wait_ready(timeout_s)
        self.wait_brokers(deadline - time.monotonic())

    def active_controller(self, timeout_s: float = 30.0) -> int:
        """The node id of the active controller, the leader of the KRaft quorum, as the
        DescribeQuorum API says (``kafka-metadata-quorum describe --status``'s LeaderId; any
        broker forwards the request to the controllers). Waits while there is none (an
        election). ``describe_cluster()``'s controller_id cannot tell: in KRaft it is a
        broker picked at random, since clients never talk to controllers."""

        def leader(admin: KafkaAdminClient) -> int | None:
            quorum = admin.describe_metadata_quorum()
            leader_id = int(quorum["topics"][0]["partitions"][0]["leader_id"])
            return leader_id if leader_id in self._nodes else None

        return self._poll(leader, time.monotonic() + timeout_s, "an active controller")

    def wait_in_sync(self, topics: Iterable[str], timeout_s: float = 60.0) -> None:
        """Until every partition of ``topics`` has a leader and all its replicas in sync."""
        names = list(topics)

        def in_sync(admin: KafkaAdminClient) -> bool | None:
            described = admin.describe_topics(names)
            partitions = [p for t in described for p in t["partitions"]]
            ok = len(described) == len(names) and all(
                p["leader_id"] >= 0 and sorted(p["isr_nodes"]) == sorted(p["replica_nodes"])
                for p in partitions
            )
            return ok or None

        self._poll(in_sync, time.monotonic() + timeout_s, f"all replicas of {names} in sync")

    def wait_brokers(self, timeout_s: float = 60.0) -> None:
        """Until the cluster lists the running nodes, and only them, as its (unfenced)
        brokers: after :meth:`restart`, the node is back; after :meth:`kill`, the controller
        has fenced the dead one (``broker.session.timeout.ms``, 9 s) and moved its partitions'
        leadership away. Until then clients may still be sent to it: kafka-python's admin
        sends CreateTopics to ``describe_cluster()``'s controller_id, which KRaft picks at
        random among the brokers it believes alive."""
        node_ids = {n for n, b in self._nodes.items() if b.pid is not None}

        def listed(admin: KafkaAdminClient) -> bool | None:
            cluster = admin.describe_cluster()["brokers"]
            brokers = {int(b["broker_id"]) for b in cluster if not b.get("is_fenced")}
            return brokers == node_ids or None

        self._poll(listed, time.monotonic() + timeout_s, f"brokers {sorted(node_ids)} listed")

    def _poll(self, ask: Callable[[KafkaAdminClient], T | None], deadline: float, what: str) -> T:
        last: object = None
        while time.monotonic() < deadline:
            try:
                admin = KafkaAdminClient(**self._running_config(), request_timeout_ms=5000)
                try:
                    answer = ask(admin)
                finally:
                    admin.close()
                if answer is not None:
                    return answer
            except (KafkaError, OSError, KeyError, IndexError) as exc:
                last = exc
            time.sleep(0.3)
        raise BrokerSetupError(f"no {what} in time ({last})")

    def _running_config(self) -> dict[str, Any]:
        """:meth:`admin_config`, bootstrapped on running nodes only."""
        up = ",".join(b.bootstrap_servers for b in self._nodes.values() if b.pid is not None)
        return {**self.admin_config(), "bootstrap_servers": up or self.bootstrap_servers}

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
