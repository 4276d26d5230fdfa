"""The long-running commands as real processes: started, doing their work, stopped by signal."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from notice_bus.bureau.sinks.tables import RED_NOTICE
from notice_bus.hq.publisher import HQ
from notice_bus.runtime.settings import Settings
from notice_bus.wire.topics import init_topics
from tests.conftest import command_env
from tests.factories import draft

pytestmark = pytest.mark.kafka
CLI = [sys.executable, "-m", "notice_bus.cli"]


def spawn(args: list[str], settings: Settings, cwd: Path) -> subprocess.Popen[str]:
    env = command_env(settings, NOTICE_BUS_TRACKER_DATABASE_URL=settings.tracker_database_url)
    return subprocess.Popen(
        [*CLI, *args], env=env, cwd=cwd, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def stop(proc: subprocess.Popen[str], sig: signal.Signals = signal.SIGTERM) -> tuple[int, str]:
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, out


def wait_for(check: object, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except sa.exc.OperationalError:
            pass  # the database file is not there yet
        time.sleep(0.3)
    raise AssertionError("not reached in time")


def test_adapter_and_tracker_processes(settings: Settings, tmp_path: Path) -> None:
    from notice_bus.reports.report import build_report
    from notice_bus.runtime.db import make_engine
    from notice_bus.tracker.tables import TRACKER_TABLES

    init_topics(settings, ["FR"])
    country_db = f"sqlite:///{tmp_path}/fr.db"
    adapter = spawn(
        ["adapter", "--country", "FR", "--database-url", country_db], settings, tmp_path
    )
    tracker = spawn(["tracker"], settings, tmp_path)
    failed: AssertionError | None = None
    try:
        with HQ(settings) as hq:
            hq.publish([draft(f"2026/{n}") for n in range(1, 21)])
        engine = make_engine(settings.tracker_database_url, TRACKER_TABLES)
        wait_for(lambda: [r.recorded for r in build_report(engine, settings)] == [20])
        local = sa.create_engine(country_db)
        with local.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(RED_NOTICE)).scalar() == 20
    except AssertionError as exc:
        failed = exc
    finally:
        codes = [stop(adapter), stop(tracker, signal.SIGINT)]
    # What the processes said is what tells why (a tracker that died on start, say).
    assert failed is None, f"{failed}; adapter and tracker (code, output): {codes}"
    assert [code for code, _ in codes] == [0, 0], codes
    assert "finishing the batch in hand" in codes[0][1]


@pytest.mark.skipif(shutil.which("java") is None, reason="the local broker needs Java 17+")
def test_broker_command_prints_its_address_and_stops(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*CLI, "broker"], cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "export KAFKA_BOOTSTRAP_SERVERS=" in line or not line:
            break
    address = lines[-1].strip().split("=", 1)[-1]
    assert address.startswith("127.0.0.1:"), lines
    init_topics(Settings(bootstrap_servers=address), ["FR"])  # it is a working broker
    code, _ = stop(proc, signal.SIGINT)
    assert code == 0
