"""Connecting to Kafka, as a user meets it: commands that say what they connect to and give up
within ``broker_timeout_s``, and services that wait for a broker instead of exiting.

Real processes through the CLI, on a port where nothing listens, then on the real broker
(through a proxy that a test opens once the services are waiting)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
import sqlalchemy as sa
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from notice_bus.bureau.sinks.tables import RED_NOTICE
from notice_bus.hq.publisher import HQ
from notice_bus.runtime.kafka import kafka_config
from notice_bus.runtime.settings import Settings
from notice_bus.wire.topics import init_topics
from tests.conftest import command_env
from tests.factories import draft, notice_json
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.kafka
CLI = [sys.executable, "-m", "notice_bus.cli"]
SRC = Path(__file__).resolve().parents[1] / "src"
TIMEOUT_S = 1.0  # the broker time-out the processes get
MARGIN_S = 8.0  # a Python process's start and imports on a busy 2-core machine


@pytest.fixture
def closed_port() -> Iterator[str]:
    """``127.0.0.1:PORT`` where nothing listens: bound, so no one else takes the port, but
    never listening, so a connection is refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def env_for(settings: Settings, servers: str, tmp_path: Path) -> dict[str, str]:
    """A `notice-bus` process's environment: this test's settings at ``servers``, with this
    checkout's code (the process runs in ``tmp_path``)."""
    return command_env(
        settings,
        KAFKA_BOOTSTRAP_SERVERS=servers,
        NOTICE_BUS_BROKER_TIMEOUT_S=str(TIMEOUT_S),
        NOTICE_BUS_HQ_DATABASE_URL=f"sqlite:///{tmp_path}/hq.db",
        NOTICE_BUS_TRACKER_DATABASE_URL=f"sqlite:///{tmp_path}/tracker.db",
        PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    )


class Running:
    """A `notice-bus` process whose output (stdout and stderr) is read as it comes."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [*CLI, *args],
            env=env,
            cwd=cwd,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def matching(self, *parts: str) -> list[str]:
        return [line for line in self.lines if all(p in line for p in parts)]

    def wait_for(self, check: Callable[[], object], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            if self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode} before {what}:\n{self.output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not {what} within {timeout_s:g} s:\n{self.output}")
            time.sleep(0.1)

    def terminate(self, timeout_s: float) -> tuple[int, float]:
        """SIGTERM; the exit code and how long it took to come."""
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"still running {timeout_s:g} s after SIGTERM:\n{self.output}"
            ) from None
        self._reader.join(5)
        return code, time.monotonic() - began

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.mark.parametrize(
    ("args", "names_the_setting"),
    [
        (["topics", "init", "--countries", "FR"], True),
        (["publish", "notices.json"], True),
        (["dlq", "list", "--country", "FR"], False),  # its own message; bounded all the same
    ],
    ids=["topics", "publish", "dlq"],
)
def test_one_shot_command_gives_up_within_the_timeout_naming_the_address(
    settings: Settings,
    closed_port: str,
    tmp_path: Path,
    args: list[str],
    names_the_setting: bool,
) -> None:
    (tmp_path / "notices.json").write_text(json.dumps(notice_json("2026/7")))
    began = time.monotonic()
    try:
        done = subprocess.run(
            [*CLI, *args],
            env=env_for(settings, closed_port, tmp_path),
            cwd=tmp_path,
            text=True,
            capture_output=True,
            timeout=TIMEOUT_S + MARGIN_S,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"still waiting {TIMEOUT_S + MARGIN_S:g} s later: {exc}") from None
    took = time.monotonic() - began
    assert done.returncode != 0, done
    assert took < TIMEOUT_S + MARGIN_S
    assert closed_port in done.stderr, done.stderr
    if names_the_setting:
        assert f"connecting to Kafka at {closed_port}" in done.stderr, done.stderr
        assert f"no Kafka broker answered at {closed_port} within {TIMEOUT_S:g} s" in done.stderr, (
            done.stderr
        )
        assert "NOTICE_BUS_BROKER_TIMEOUT_S" in done.stderr
        assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "who"),
    [
        (["adapter", "--country", "FR", "--database-url", "sqlite:///fr.db"], "adapter FR"),
        (
            ["adapter", "--country", "FR,TH", "--database-url", "sqlite:///{country}.db"],
            "adapter FR,TH",
        ),
        (["tracker"], "tracker"),
    ],
    ids=["adapter", "hub", "tracker"],
)
def test_service_without_a_broker_keeps_trying_and_stops_on_sigterm(
    settings: Settings, closed_port: str, tmp_path: Path, args: list[str], who: str
) -> None:
    service = Running(args, env_for(settings, closed_port, tmp_path), tmp_path)
    try:
        service.wait_for(
            lambda: service.matching("INFO", f"connecting to Kafka at {closed_port}"),
            MARGIN_S,
            "saying where it connects",
        )
        began = time.monotonic()
        service.wait_for(
            lambda: len(service.matching("WARNING", who, closed_port)) >= 2,
            3 * TIMEOUT_S + 3 + MARGIN_S,  # two attempts and a wait of 1 s between them
            "retrying twice",
        )
        assert time.monotonic() - began > TIMEOUT_S  # alive longer than one attempt
        waits = [line.rsplit("trying again in ", 1)[-1] for line in service.matching("WARNING")]
        assert waits[:2] == ["1 s", "2 s"], service.output  # backoff, said as it goes
        assert service.proc.poll() is None
        code, took = service.terminate(timeout_s=TIMEOUT_S + 5)
    finally:
        service.kill()
    assert code == 0, service.output
    assert took < TIMEOUT_S + 5
    assert "Traceback" not in service.output


def test_services_started_before_the_broker_connect_once_it_answers(
    settings: Settings, tmp_path: Path
) -> None:
    init_topics(settings, ["FR"])
    host, _, port = settings.bootstrap_servers.split(",")[0].rpartition(":")
    with TcpProxy(host, int(port)) as proxy:
        proxy.cut()  # the broker is away: its address refuses connections
        servers = f"127.0.0.1:{proxy.port}"
        env = env_for(settings, servers, tmp_path)
        country_db = f"sqlite:///{tmp_path}/fr.db"
        adapter = Running(
            ["adapter", "--country", "FR", "--database-url", country_db], env, tmp_path
        )
        tracker = Running(["tracker"], env, tmp_path)
        try:
            for service, who in ((adapter, "adapter FR"), (tracker, "tracker")):
                service.wait_for(
                    partial(service.matching, "WARNING", who, servers),
                    TIMEOUT_S + MARGIN_S,
                    "retrying",
                )
            proxy.restore()  # the broker is back
            adapter.wait_for(
                lambda: adapter.matching("consuming the notices of FR"), 30, "consuming"
            )
            with HQ(settings) as hq:
                hq.publish([draft("2026/8")])
            local = sa.create_engine(country_db)
            try:

                def recorded() -> bool:
                    with local.connect() as conn:
                        count = sa.select(sa.func.count()).select_from(RED_NOTICE)
                        return conn.execute(count).scalar() == 1

                adapter.wait_for(recorded, 30, "recording the notice")
            finally:
                local.dispose()
            from notice_bus.reports.report import build_report
            from notice_bus.runtime.db import make_engine
            from notice_bus.tracker.tables import TRACKER_TABLES

            engine = make_engine(f"sqlite:///{tmp_path}/tracker.db", TRACKER_TABLES)
            try:
                tracker.wait_for(
                    lambda: [r.recorded for r in build_report(engine, settings)] == [1],
                    30,
                    "tracking the acknowledgement",
                )
            finally:
                engine.dispose()
            codes = [adapter.terminate(30)[0], tracker.terminate(30)[0]]
        finally:
            adapter.kill()
            tracker.kill()
    assert codes == [0, 0], adapter.output + "\n" + tracker.output


def test_the_timeout_reaches_every_kind_of_client(settings: Settings) -> None:
    s = settings.with_(broker_timeout_s=2.5)
    assert kafka_config(s, "x")["bootstrap_timeout_ms"] == 2500
    assert kafka_config(s, "x", producer=True)["max_block_ms"] == 2500
    # kafka-python refuses an option a client does not have: each kind takes its own.
    clients = [
        KafkaConsumer(**kafka_config(s, "test-consumer"), session_timeout_ms=10000),
        KafkaProducer(**kafka_config(s, "test-producer", producer=True)),
        KafkaAdminClient(**kafka_config(s, "test-admin")),
    ]
    for client in clients:
        client.close()
