"""Real components for the tests, and factories that give each test fresh ones.

Kafka: ``KAFKA_BOOTSTRAP_SERVERS`` if set, else testcontainers' Kafka (KRaft) if a Docker engine
answers, else a local single-node broker started from the official jars.
PostgreSQL: ``NOTICE_BUS_TEST_DATABASE_URL`` if set, else testcontainers' PostgreSQL if Docker
answers, else a throwaway cluster from the local binaries. Every test gets its own topic prefix
(so its own topics and consumer groups) and its own databases. A module that asks for
``kafka_cluster`` gets a three-node cluster of its own, which its tests may kill nodes of.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from notice_bus.bureau.adapter import Adapter
from notice_bus.bureau.sinks.sql import SqlSink
from notice_bus.hq.publisher import HQ
from notice_bus.runtime.local_broker import LocalBroker
from notice_bus.runtime.local_cluster import LocalCluster
from notice_bus.runtime.settings import Settings
from notice_bus.tracker.ingest import Tracker
from notice_bus.wire.topics import init_topics
from tests.support.postgres import LocalPostgres


def _docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    elif _docker_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
    else:
        with LocalBroker() as broker:
            yield broker.bootstrap_servers


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    if os.environ.get("NOTICE_BUS_TEST_DATABASE_URL"):
        yield os.environ["NOTICE_BUS_TEST_DATABASE_URL"]
    elif _docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver="psycopg") as pg:
            yield pg.get_connection_url()
    else:
        pg = LocalPostgres()
        try:
            yield pg.start()
        finally:
            pg.stop()


@pytest.fixture
def new_postgres_db(postgres_server: str) -> Callable[[], str]:
    """Factory: a fresh, empty PostgreSQL database per call, dropped after the test."""
    admin = sa.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    made: list[str] = []

    def make() -> str:
        name = f"nb_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        made.append(name)
        return str(sa.make_url(postgres_server).set(database=name).render_as_string(False))

    yield make  # type: ignore[misc]
    with admin.connect() as conn:
        for name in made:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="module")
def kafka_cluster() -> Iterator[LocalCluster]:
    """A local three-node cluster (a KRaft quorum of three, topics with three replicas of which
    a write needs two), started once for the module and stopped after it. Always ours, never
    an external one: the tests kill and restart its nodes."""
    with LocalCluster() as cluster:
        yield cluster


@pytest.fixture
def settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    """Settings for one test: its own topics, consumer groups and SQLite files."""
    return settings_on(kafka_bootstrap, tmp_path)


@pytest.fixture
def cluster_settings(kafka_cluster: LocalCluster, tmp_path: Path) -> Settings:
    """As ``settings``, on the module's cluster."""
    return settings_on(kafka_cluster.bootstrap_servers, tmp_path)


def settings_on(bootstrap_servers: str, tmp_path: Path) -> Settings:
    return Settings(
        bootstrap_servers=bootstrap_servers,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        hq_database_url=f"sqlite:///{tmp_path}/hq.db",
        tracker_database_url=f"sqlite:///{tmp_path}/tracker.db",
        poll_timeout_ms=100,
        retry_initial_s=0.05,
        retry_max_s=0.5,
        retry_attempts=4,
    )


@pytest.fixture
def cli_env(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The environment of ``notice_bus.cli.main`` run in-process: this test's settings."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.bootstrap_servers)
    monkeypatch.setenv("NOTICE_BUS_TOPIC_PREFIX", settings.topic_prefix)
    monkeypatch.setenv("NOTICE_BUS_HQ_DATABASE_URL", settings.hq_database_url)
    monkeypatch.setenv("NOTICE_BUS_TRACKER_DATABASE_URL", settings.tracker_database_url)
    return settings


@pytest.fixture(params=["sqlite", "postgres"])
def hq_url(request: pytest.FixtureRequest, settings: Settings) -> str:
    """HQ's database, once SQLite and once a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return settings.hq_database_url
    make: Callable[[], str] = request.getfixturevalue("new_postgres_db")
    return make()


class Bus:
    """One test's deployment: topics for some countries, HQ, adapters, a tracker."""

    def __init__(self, settings: Settings, countries: list[str]) -> None:
        self.settings = settings
        self.countries = countries
        init_topics(settings, countries)
        self.hq = HQ(settings)
        self.tracker = Tracker(settings)
        self.adapters: dict[str, Adapter] = {}
        self._closers: list[Callable[[], Any]] = [self.hq.close, self.tracker.close]

    def adapter(self, country: str, database_url: str, **kw: Any) -> Adapter:
        adapter = Adapter(self.settings, {country: SqlSink(database_url)}, **kw)
        self.adapters[country] = adapter
        self._closers.append(adapter.close)
        return adapter

    def pump(self, until: Callable[[], bool], timeout_s: float = 30.0) -> None:
        """Step every adapter and the tracker until ``until()`` holds."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for a in self.adapters.values():
                a.step()
            self.tracker.step()
            if until():
                return
        raise AssertionError(f"condition not reached within {timeout_s}s")

    def close(self) -> None:
        for close in reversed(self._closers):
            close()


@pytest.fixture
def make_bus(settings: Settings) -> Iterator[Callable[..., Bus]]:
    buses: list[Bus] = []

    def make(countries: list[str], **overrides: Any) -> Bus:
        bus = Bus(settings.with_(**overrides) if overrides else settings, countries)
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        bus.close()


def run_in_thread(
    target: Callable[[threading.Event], None],
) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    t = threading.Thread(target=target, args=(stop,), daemon=True)
    t.start()
    return t, stop


def command_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a `notice-bus` subprocess: this test's broker and topics, polls of
    0.2 s, and ``extra`` (NOTICE_BUS_* settings)."""
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "NOTICE_BUS_TOPIC_PREFIX": settings.topic_prefix,
        "NOTICE_BUS_POLL_TIMEOUT_MS": "200",
        **extra,
    }
