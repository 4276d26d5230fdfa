"""``notice-bus broker --data DIR`` as a user runs it: stopped, started again, the same broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from kafka import KafkaConsumer

from notice_bus.hq.publisher import HQ
from notice_bus.runtime.local_broker import LocalBroker, free_port
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
