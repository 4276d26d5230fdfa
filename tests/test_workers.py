"""Work split across processes by country, on the real broker and PostgreSQL: a tracker
(``notice-bus tracker --workers``) stores every country's acknowledgements once, and a hub
(``notice-bus adapter --processes``) writes every country's notices; a killed worker is
replaced without losing any."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from notice_bus.bureau.adapter import Adapter
from notice_bus.bureau.sinks.local_system import Systems
from notice_bus.bureau.sinks.sql import SqlSink
from notice_bus.bureau.workers import AdapterWorkers
from notice_bus.errors import ConfigError
from notice_bus.hq.publisher import HQ
from notice_bus.runtime.db import make_engine
from notice_bus.runtime.settings import Settings
from notice_bus.runtime.workers import Workers, backoff_s, shard_of, split
from notice_bus.tracker.ingest import Tracker
from notice_bus.tracker.tables import TRACKER_TABLES
from notice_bus.tracker.workers import TrackerWorkers
from notice_bus.wire.topics import init_topics
from tests.conftest import command_env, run_in_thread
from tests.factories import draft

pytestmark = pytest.mark.kafka

COUNTRIES = ["FR", "DE", "IT", "ES", "NG", "TH"]


def test_each_country_has_one_worker_and_the_split_is_stable() -> None:
    shards = {cc: shard_of(cc, 2) for cc in COUNTRIES}
    assert set(shards.values()) == {0, 1}  # both workers have countries in the tests below
    assert shards == {cc: shard_of(cc, 2) for cc in COUNTRIES}
    assert {shard_of(cc, 1) for cc in COUNTRIES} == {0}
    parts = split(COUNTRIES, 2)
    assert sorted(parts[0] + parts[1]) == sorted(COUNTRIES)
    assert all(shard_of(cc, 2) == i for i, part in enumerate(parts) for cc in part)


def test_a_process_left_without_a_country_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="without a country"):
        split(["FR", "DE"], 5)
    with pytest.raises(ConfigError, match="at least 1"):
        split(["FR"], 0)


def test_a_worker_that_does_not_exist_is_a_config_error(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="worker 2 of 2"):
        Tracker(settings, shard=2, shards=2)


def test_a_worker_that_keeps_dying_at_start_is_started_again_less_and_less_often() -> None:
    assert [backoff_s(n) for n in (0, 1, 2, 3, 4, 7, 8, 20)] == [0, 1, 2, 4, 8, 60, 60, 60]
    # sys.exit given a worker's four arguments raises at once: a worker that cannot start.
    workers = Workers("dying", sys.exit, 1)
    supervisor, stop = run_in_thread(lambda s: workers.supervise(s, every_s=0.05))
    time.sleep(5)
    stop.set()
    supervisor.join(60)
    # Started again after 1 s, then 2 s, then 4 s: at most twice in 5 s, however fast it
    # dies (every 0.05 s, as before, would be once per start-up, ~1 s here).
    assert 1 <= workers.restarts <= 2


def recorded(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT country, count(*) FROM tracker_sent WHERE recorded_at IS NOT NULL"
                    " GROUP BY country"
                )
            ).all()
    finally:
        engine.dispose()
    return {cc: n for cc, n in rows}


def wait_for(check: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.2)


def publish_kill_and_publish(
    settings: Settings, workers: Workers, recorded: Callable[[], dict[str, int]]
) -> None:
    """Under supervision: 5 notices to every country, all recorded; worker 1 SIGKILLed;
    5 more, all recorded too; worker 1 replaced; the supervisor stops on request."""
    workers.wait_ready()
    supervisor, stop = run_in_thread(lambda s: workers.supervise(s, every_s=0.2))
    with HQ(settings) as hq:
        hq.publish([draft(f"2026/{n}", targets=tuple(COUNTRIES)) for n in range(1, 6)])
        wait_for(lambda: recorded() == dict.fromkeys(COUNTRIES, 5))
        killed = workers.pids()[1]
        assert killed is not None
        os.kill(killed, signal.SIGKILL)
        hq.publish([draft(f"2026/{n}", targets=tuple(COUNTRIES)) for n in range(6, 11)])
        wait_for(lambda: recorded() == dict.fromkeys(COUNTRIES, 10), 90)
    assert workers.pids()[1] not in (None, killed)
    stop.set()
    supervisor.join(90)
    assert not supervisor.is_alive()


def test_two_workers_store_every_country_and_a_killed_one_is_replaced(
    settings: Settings, new_postgres_db: Callable[[], str], tmp_path: Path
) -> None:
    init_topics(settings, COUNTRIES)
    url = new_postgres_db()
    make_engine(url, TRACKER_TABLES).dispose()
    sinks = {cc: SqlSink(f"sqlite:///{tmp_path}/{cc}.db") for cc in COUNTRIES}
    hub = Adapter(settings, sinks)  # type: ignore[arg-type]
    hub_thread, hub_stop = run_in_thread(hub.run)
    workers = TrackerWorkers(settings, 2, database_url=url, escalate=False)
    try:
        publish_kill_and_publish(settings, workers, lambda: recorded(url))
    finally:
        workers.stop()
        hub_stop.set()
        hub_thread.join(30)
    engine = make_engine(url)
    with engine.connect() as conn:
        acks = conn.execute(sa.text("SELECT count(*) FROM tracker_ack")).scalar_one()
    engine.dispose()
    # Each notice's RECORDED and the RECEIVED it carries, once, whoever read it.
    assert acks == 2 * 10 * len(COUNTRIES)


def test_the_command_runs_workers_and_stops_them_on_sigterm(
    settings: Settings, new_postgres_db: Callable[[], str], tmp_path: Path
) -> None:
    init_topics(settings, ["FR", "DE"])
    url = new_postgres_db()
    env = command_env(settings)
    proc = subprocess.Popen(
        [sys.executable, "-m", "notice_bus.cli", "tracker", "--workers", "2", "--database-url",
         url],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        adapter = Adapter(settings, {"FR": SqlSink(f"sqlite:///{tmp_path}/fr.db")})
        adapter2 = Adapter(settings, {"DE": SqlSink(f"sqlite:///{tmp_path}/de.db")})
        with HQ(settings) as hq:
            hq.publish([draft(f"2026/{n}", targets=("FR", "DE")) for n in range(1, 4)])
        deadline = time.monotonic() + 60
        while recorded(url) != {"FR": 3, "DE": 3}:
            assert time.monotonic() < deadline, "not recorded in time"
            adapter.step()
            adapter2.step()
        adapter.close()
        adapter2.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, out
    assert "2 workers" in out


def local_count(url: str) -> int:
    """Notices in a country's local table (0 before its adapter made it)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM red_notice")).scalar_one())
    except sa.exc.OperationalError:
        return 0
    finally:
        engine.dispose()


def test_a_hub_in_two_processes_serves_every_country_and_a_killed_one_is_replaced(
    settings: Settings, new_postgres_db: Callable[[], str], tmp_path: Path
) -> None:
    init_topics(settings, COUNTRIES)
    tracker_url = new_postgres_db()
    tracker = Tracker(settings, database_url=tracker_url)
    tracker_thread, tracker_stop = run_in_thread(tracker.run)
    local = f"sqlite:///{tmp_path}/{{country}}.db"
    workers = AdapterWorkers(settings, COUNTRIES, Systems("sql", {"database_url": local}), 2)
    try:
        publish_kill_and_publish(settings, workers, lambda: recorded(tracker_url))
    finally:
        workers.stop()
        tracker_stop.set()
        tracker_thread.join(30)
    for cc in COUNTRIES:
        assert local_count(local.replace("{country}", cc)) == 10, cc


def test_the_adapter_command_splits_its_countries_and_stops_on_sigterm(
    settings: Settings, tmp_path: Path
) -> None:
    init_topics(settings, COUNTRIES)
    env = command_env(settings)
    local = f"sqlite:///{tmp_path}/{{country}}.db"
    command = [sys.executable, "-m", "notice_bus.cli", "adapter", "--country",
               ",".join(COUNTRIES), "--database-url", local]  # fmt: skip
    too_many = subprocess.run(
        [*command, "--processes", "40"], env=env, capture_output=True, text=True, timeout=60
    )
    assert too_many.returncode == 78  # EX_CONFIG
    assert "without a country" in too_many.stderr
    proc = subprocess.Popen(
        [*command, "--processes", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with HQ(settings) as hq:
            hq.publish([draft(f"2026/{n}", targets=tuple(COUNTRIES)) for n in range(1, 4)])
        wait_for(lambda: all(local_count(local.replace("{country}", cc)) == 3 for cc in COUNTRIES))
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, out
    assert "6 countries in 2 processes" in out
