"""Adapters that never lose, duplicate or resurrect a notice, whatever fails on the way.

Everything here is real: adapter processes killed with SIGKILL, a broker stopped and started,
a PostgreSQL connection cut for 30 s, an HQ process killed between its commit and its send.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from notice_bus.bureau.adapter import Adapter
from notice_bus.bureau.sinks.sql import SqlSink
from notice_bus.hq.publisher import HQ
from notice_bus.reports.report import build_report
from notice_bus.runtime.db import make_engine
from notice_bus.runtime.local_broker import LocalBroker
from notice_bus.runtime.settings import Settings
from notice_bus.tracker.ingest import Tracker
from notice_bus.tracker.tables import ACK, TRACKER_TABLES
from notice_bus.wire.topics import init_topics
from tests.conftest import command_env
from tests.support.tcp_proxy import TcpProxy
from tests.support.workload import (
    Workload,
    content_mismatches,
    hq_state,
    local_state,
    recorded_counts,
    unrecorded,
)

pytestmark = pytest.mark.kafka
CLI = [sys.executable, "-m", "notice_bus.cli"]


def adapter_process(
    settings: Settings, country: str, url: str, *extra: str, log: Path
) -> subprocess.Popen[bytes]:
    env = command_env(settings, NOTICE_BUS_BATCH_SIZE="100", NOTICE_BUS_SESSION_TIMEOUT_MS="6000")
    with open(log, "ab") as out:
        return subprocess.Popen(
            [*CLI, "adapter", "--country", country, "--database-url", url, *extra],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture
def tracker(settings: Settings) -> Iterator[Tracker]:
    init_topics(settings, [])  # the schema topic, which the tracker reads first
    t = Tracker(settings)
    stop = threading.Event()
    thread = threading.Thread(target=t.run, args=(stop,), daemon=True)
    thread.start()
    yield t
    stop.set()
    thread.join(30)


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what}: not reached within {timeout_s}s")


@contextlib.contextmanager
def show_on_failure(log: Path) -> Iterator[None]:
    """Adds the adapters' own output to a failure, which is where its cause is."""
    try:
        yield
    except AssertionError as exc:
        tail = log.read_text(errors="replace")[-6000:] if log.exists() else "(no log)"
        raise AssertionError(f"{exc}\n--- {log.name} (end) ---\n{tail}") from exc


def assert_exact(settings: Settings, country: str, url: str, timeout_s: float = 120) -> None:
    """The local copy equals HQ's state, content included, and every final version has
    exactly one RECORDED acknowledgement at the tracker."""
    expected = hq_state(settings)
    wait_until(lambda: local_state(url) == expected, timeout_s, "local copy equals HQ")
    wait_until(lambda: not unrecorded(settings, country), 60, "every notice RECORDED")
    assert content_mismatches(settings, url) == []
    assert set(recorded_counts(settings, country).values()) == {1}


def test_adapter_killed_at_random_moments(
    settings: Settings, new_postgres_db: Callable[[], str], tracker: Tracker, tmp_path: Path
) -> None:
    log = tmp_path / "adapter.log"
    with show_on_failure(log):
        killed_at_random_moments(settings, new_postgres_db(), log)


def killed_at_random_moments(settings: Settings, url: str, log: Path) -> None:
    init_topics(settings, ["FR"])
    work = Workload(settings, notices=1300, updates=550, cancels=200, rounds=25, pause_s=1.0)
    work.start()
    rng = random.Random(5)
    kills = 0
    while kills < 10 or work.is_alive():
        proc = adapter_process(settings, "FR", url, "--instance-id", "FR-1", log=log)
        time.sleep(rng.uniform(1.5, 4.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    assert work.error is None, work.error
    assert work.events >= 2000
    survivor = adapter_process(settings, "FR", url, "--instance-id", "FR-1", log=log)
    try:
        assert_exact(settings, "FR", url)
        assert local_state(url) and kills >= 10
    finally:
        # A SIGTERM before the process is up would just end it; wait until it consumes.
        started = f":{survivor.pid} consuming"
        wait_until(lambda: started in log.read_text(errors="replace"), 60, "survivor up")
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(60) == 0


def test_two_instances_one_killed(
    settings: Settings, new_postgres_db: Callable[[], str], tracker: Tracker, tmp_path: Path
) -> None:
    log = tmp_path / "adapters.log"
    with show_on_failure(log):
        two_instances_one_killed(settings, new_postgres_db(), log)


def two_instances_one_killed(settings: Settings, url: str, log: Path) -> None:
    init_topics(settings, ["FR"])  # 3 partitions: both instances get work
    a = adapter_process(settings, "FR", url, log=log)
    b = adapter_process(settings, "FR", url, log=log)
    work = Workload(settings, notices=400, updates=150, cancels=50, rounds=10, pause_s=0.8)
    work.start()
    try:
        time.sleep(5)
        a.send_signal(signal.SIGKILL)
        a.wait()
        work.join(120)
        assert work.error is None, work.error
        assert_exact(settings, "FR", url)
    finally:
        wait_until(lambda: f":{b.pid} consuming" in log.read_text(errors="replace"), 60, "b up")
        b.send_signal(signal.SIGTERM)
        assert b.wait(60) == 0


def test_hq_killed_between_commit_and_send(
    settings: Settings, tmp_path: Path, tracker: Tracker
) -> None:
    init_topics(settings, ["FR"])
    script = (
        "import os, signal\n"
        "from notice_bus.hq.publisher import HQ\n"
        "from notice_bus.runtime.settings import Settings\n"
        "from notice_bus.hq.generate import make_drafts\n"
        f"hq = HQ(Settings(bootstrap_servers={settings.bootstrap_servers!r},"
        f" topic_prefix={settings.topic_prefix!r}, hq_database_url={settings.hq_database_url!r}))\n"
        "hq.publish(make_drafts(5), relay=False)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    died = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert died.returncode == -signal.SIGKILL, died.stderr
    url = f"sqlite:///{tmp_path}/fr.db"
    with HQ(settings) as hq:
        assert hq.pending() == 5  # committed, never sent
        adapter = Adapter(settings, {"FR": SqlSink(url)})
        try:
            assert hq.relay() == 5  # any later HQ call sends them
            assert hq.relay() == 0
            deadline = time.monotonic() + 30
            while unrecorded(settings, "FR") or len(local_state(url)) < 5:
                assert time.monotonic() < deadline, "not delivered"
                adapter.step()
        finally:
            adapter.close()
    assert len(local_state(url)) == 5
    assert recorded_counts(settings, "FR") == {(f"2026/{10000 + i}", 1): 1 for i in range(5)}


def test_database_unreachable_for_30_seconds(
    settings: Settings, new_postgres_db: Callable[[], str], tracker: Tracker, tmp_path: Path
) -> None:
    init_topics(settings, ["FR", "TH"])
    url = sa.make_url(new_postgres_db())
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    fr_url = url.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
    th_url = f"sqlite:///{tmp_path}/th.db"
    stop = threading.Event()
    fr = Adapter(settings.with_(retry_attempts=2), {"FR": SqlSink(fr_url)})
    th = Adapter(settings, {"TH": SqlSink(th_url)})
    threads = [threading.Thread(target=a.run, args=(stop,), daemon=True) for a in (fr, th)]
    for t in threads:
        t.start()
    work = Workload(settings, notices=300, updates=60, cancels=30, rounds=15, pause_s=1.0)
    work.start()
    try:
        time.sleep(4)
        proxy.cut()
        time.sleep(30)
        held_during_outage = fr.holding
        proxy.restore()
        work.join(120)
        assert work.error is None
        assert held_during_outage
        assert_exact(settings, "FR", fr_url)
        assert_exact(settings, "TH", th_url)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        proxy.close()
    engine = make_engine(settings.tracker_database_url, TRACKER_TABLES)
    report = {r.country: r for r in build_report(engine, settings)}
    assert report["FR"].max_lag_s is not None and report["FR"].max_lag_s > 20
    assert report["TH"].max_lag_s is not None and report["TH"].max_lag_s < 10
    # The batch held through the outage was acknowledged RECEIVED when it was held, long
    # before its RECORDED: HQ could see it had arrived.
    with engine.connect() as conn:
        got = {(a.notice_id, a.version): a.broker_at for a in acks(conn, "FR", "RECEIVED")}
        done = {(a.notice_id, a.version): a.broker_at for a in acks(conn, "FR", "RECORDED")}
    assert any((done[k] - got[k]).total_seconds() > 20 for k in got.keys() & done.keys())


def acks(conn: sa.Connection, country: str, status: str) -> list[Any]:
    query = sa.select(ACK).where(ACK.c.country == country, ACK.c.status == status)
    return list(conn.execute(query))


@pytest.mark.skipif(
    shutil.which("java") is None or bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")),
    reason="needs a broker this test may stop: the local one, from Java",
)
def test_broker_stopped_and_restarted_mid_stream(tmp_path: Path) -> None:
    broker = LocalBroker()
    broker.start()
    settings = Settings(
        bootstrap_servers=broker.bootstrap_servers,
        hq_database_url=f"sqlite:///{tmp_path}/hq.db",
        tracker_database_url=f"sqlite:///{tmp_path}/tracker.db",
        poll_timeout_ms=200,
        retry_initial_s=0.1,
        retry_max_s=1.0,
        retry_attempts=3,
    )
    url = f"sqlite:///{tmp_path}/fr.db"
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        init_topics(settings, ["FR"])
        runners = [Adapter(settings, {"FR": SqlSink(url)}), Tracker(settings)]
        threads = [threading.Thread(target=r.run, args=(stop,), daemon=True) for r in runners]
        for t in threads:
            t.start()
        work = Workload(settings, notices=300, updates=60, cancels=30, rounds=15, pause_s=1.0)
        work.start()
        time.sleep(5)
        broker.stop(keep_data=True)
        time.sleep(8)
        broker.start()
        work.join(180)
        assert work.error is None, work.error
        assert_exact(settings, "FR", url)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        broker.stop()
