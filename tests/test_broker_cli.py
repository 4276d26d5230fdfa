"""``notice-bus broker --data DIR`` as a user runs it: stopped, started again, the same broker;
and the same with ``--brokers 3``, a cluster."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer

from notice_bus.cli import main
from notice_bus.cli.exit_codes import EX_CONFIG
from notice_bus.errors import ConfigError
from notice_bus.hq.publisher import HQ
from notice_bus.runtime.local_broker import LocalBroker, free_port
from notice_bus.runtime.local_cluster import LocalCluster
from notice_bus.runtime.settings import Settings
from notice_bus.wire.topics import TopicNames, init_topics, registered_countries
from tests.factories import draft

CLI = [sys.executable, "-m", "notice_bus.cli"]


def start_broker(args: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """``notice-bus broker ARGS``, once it says it is up; its output goes to ``log``."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*CLI, "broker", *args], cwd=cwd, stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if "Kafka is up at" in log.read_text():
            return proc
        if proc.poll() is not None:
            raise AssertionError(f"broker exited with {proc.returncode}:\n{log.read_text()}")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"broker not up in time:\n{log.read_text()}")


def stop_broker(proc: subprocess.Popen[bytes], sig: signal.Signals) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def notice_keys(settings: Settings, country: str, count: int) -> set[str]:
    consumer = KafkaConsumer(
        TopicNames(settings.topic_prefix).notices(country),
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=15000,
    )
    try:
        keys: set[str] = set()
        for record in consumer:
            keys.add(record.key.decode())
            if len(keys) == count:
                break
        return keys
    finally:
        consumer.close()


def test_broker_comes_back_on_its_data_and_port(tmp_path: Path) -> None:
    data, port = tmp_path / "kafka", free_port()
    settings = Settings(
        bootstrap_servers=f"127.0.0.1:{port}",
        topic_prefix="restart.",
        hq_database_url=f"sqlite:///{tmp_path}/hq.db",
    )
    first = start_broker(["--data", str(data), "--port", str(port)], tmp_path / "1.log", tmp_path)
    # A client connected while the broker stops, as a running adapter is: the broker closes
    # the connection, which leaves the port's side of it in TIME_WAIT for a minute.
    client = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    try:
        assert f"KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{port}" in (tmp_path / "1.log").read_text()
        init_topics(settings, ["FR", "TH"])
        with HQ(settings) as hq:
            hq.publish([draft("2026/1", targets=("FR",)), draft("2026/2", targets=("FR",))])
        assert "notices.FR" in " ".join(client.topics())
    finally:
        assert stop_broker(first, signal.SIGINT) == 0
        client.close()

    # Without --port: the port kept with the data, so clients find it where it was.
    again = start_broker(["--data", str(data)], tmp_path / "2.log", tmp_path)
    try:
        # The moment it says it is up, as a script would: partitions may have no leader yet,
        # which is retried and worded, never a raw metadata dump or a failure.
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "NOTICE_BUS_TOPIC_PREFIX": settings.topic_prefix,
            "NOTICE_BUS_HQ_DATABASE_URL": settings.hq_database_url,
        }
        cancel = subprocess.run(
            [*CLI, "cancel", "2026/2", "--reason", "withdrawn by the requesting bureau"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert cancel.returncode == 0, cancel.stderr
        assert "error_code" not in cancel.stderr and "Metadata" not in cancel.stderr
        log = (tmp_path / "2.log").read_text()
        assert f"KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{port}" in log and "again" in log
        assert registered_countries(settings) == ["FR", "TH"]
        assert notice_keys(settings, "FR", 2) == {"2026/1", "2026/2"}
        with HQ(settings) as hq:  # and it takes new work
            assert hq.cancel("2026/1", "arrested").version == 2
    finally:
        assert stop_broker(again, signal.SIGTERM) == 0


def test_the_port_is_kept_with_the_data_unless_one_is_given(tmp_path: Path) -> None:
    """No Java needed: what a broker on a folder will listen on, from what the last start
    wrote there."""
    first = LocalBroker(tmp_path, port=free_port())
    first._write_config()
    again = LocalBroker(tmp_path)
    assert again.port == first.port
    other = free_port()
    assert LocalBroker(tmp_path, port=other).port == other
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "meta.properties").write_text(
        "#\nnode.id=1\ndirectory.id=x\nversion=1\ncluster.id=Lp1ITsbTQ5eI6dDkxGwnMw\n"
    )
    assert LocalBroker(tmp_path).cluster_id == "Lp1ITsbTQ5eI6dDkxGwnMw"


def test_a_cluster_of_three_comes_back_on_its_data(tmp_path: Path) -> None:
    data = tmp_path / "cluster"
    first = start_broker(["--brokers", "3", "--data", str(data)], tmp_path / "1.log", tmp_path)
    try:
        found = re.search(r"KAFKA_BOOTSTRAP_SERVERS=(\S+)", (tmp_path / "1.log").read_text())
        assert found is not None
        servers = found.group(1)
        addresses = servers.split(",")
        assert len(set(addresses)) == 3 and all(a.startswith("127.0.0.1:") for a in addresses)
        admin = KafkaAdminClient(bootstrap_servers=servers)
        try:
            assert len(admin.describe_cluster()["brokers"]) == 3
            admin.create_topics({"kept": {"num_partitions": 2}}, wait_for_metadata=True)
        finally:
            admin.close()
    finally:
        assert stop_broker(first, signal.SIGINT) == 0
    assert sorted(p.name for p in data.glob("node-*")) == ["node-1", "node-2", "node-3"]

    again = start_broker(["--brokers", "3", "--data", str(data)], tmp_path / "2.log", tmp_path)
    try:
        log = (tmp_path / "2.log").read_text()
        assert f"KAFKA_BOOTSTRAP_SERVERS={servers}" in log and "cluster of 3 brokers" in log
        assert "again" in log
        admin = KafkaAdminClient(bootstrap_servers=servers)
        try:
            (kept,) = admin.describe_topics(["kept"])
            assert [len(p["replica_nodes"]) for p in kept["partitions"]] == [3, 3]
        finally:
            admin.close()
    finally:
        assert stop_broker(again, signal.SIGTERM) == 0


def test_a_cluster_is_three_to_five_brokers_on_a_folder_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No Java needed: what is refused before anything starts, and the ports a cluster's
    nodes are given and keep."""
    monkeypatch.chdir(tmp_path)
    assert main(["broker", "--brokers", "2"]) == EX_CONFIG
    assert "--brokers is 1, or 3 to 5" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="3 to 5 brokers"):
        LocalCluster(tmp_path, brokers=6)

    port = free_port()
    cluster = LocalCluster(tmp_path / "three", port=port)
    assert [n.port for n in cluster.nodes] == [port, port + 1, port + 2]
    for n in cluster.nodes:
        cluster.node(n.node_id)._write_config()
        (tmp_path / "three" / f"node-{n.node_id}" / "data").mkdir()
        (tmp_path / "three" / f"node-{n.node_id}" / "data" / "meta.properties").write_text(
            f"node.id={n.node_id}\ncluster.id={cluster.cluster_id}\n"
        )
    again = LocalCluster(tmp_path / "three")
    assert again.bootstrap_servers == cluster.bootstrap_servers
    assert again.cluster_id == cluster.cluster_id
    with pytest.raises(ConfigError, match="a cluster of 3 brokers; start it with 3, not 5"):
        LocalCluster(tmp_path / "three", brokers=5)

    single = LocalBroker(tmp_path / "single")
    single._write_config()
    (tmp_path / "single" / "data").mkdir()
    (tmp_path / "single" / "data" / "meta.properties").write_text("cluster.id=x\n")
    with pytest.raises(ConfigError, match="a single broker's data"):
        LocalCluster(tmp_path / "single")
