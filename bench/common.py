"""Shared pieces of the benchmarks: real servers, timing, and the results file."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

from notice_bus.runtime.kafka import admin_client
from notice_bus.runtime.settings import Settings

RESULTS = Path(__file__).parent / "results.json"

# Sizes come from the environment, so that a quick look is possible (BENCH_NOTICES=60 make
# bench); the defaults are the ones README's figures were measured with.
NOTICES = int(os.environ.get("BENCH_NOTICES", "1000"))  # the long runs, at 196 countries
SMALL = int(os.environ.get("BENCH_SMALL_NOTICES", "40"))  # each short run
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))  # of every short run, each fresh
BLOCKS = int(os.environ.get("BENCH_BLOCKS", "10"))  # a long run's, alternating with another's
RATE = 2.0  # notices per second
WARMUP = int(os.environ.get("BENCH_WARMUP_NOTICES", "30"))  # untimed, before each run's timing
PROCESSES = int(os.environ.get("BENCH_HOST_PROCESSES", "2"))  # the host's, from 2 countries on


@contextmanager
def postgres() -> Iterator[str]:
    """``NOTICE_BUS_BENCH_DATABASE_URL``, else a throwaway local cluster."""
    if os.environ.get("NOTICE_BUS_BENCH_DATABASE_URL"):
        yield os.environ["NOTICE_BUS_BENCH_DATABASE_URL"]
        return
    from tests.support.postgres import LocalPostgres

    pg = LocalPostgres()
    try:
        yield pg.start()
    finally:
        pg.stop()


def timed(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, list[float]]:
    """Median and all wall-clock seconds of ``repeat`` runs of ``fn``."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs), runs


def record(figures: dict[str, Any]) -> None:
    """Merge ``figures`` into bench/results.json, with the machine they were measured on."""
    data: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data.update(figures)
    data["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


_STARTED = time.monotonic()


def say(text: str) -> None:
    """Print a line, stamped with the minutes and seconds since the benchmarks began."""
    m, s = divmod(int(time.monotonic() - _STARTED), 60)
    print(f"[{m:02d}:{s:02d}] {text}", flush=True)


def drop_topics(settings: Settings) -> None:
    """Delete a run's topics: every run then meets a broker that holds one deployment's
    topics, as in production, not those of every run before it (HQ lists them)."""
    admin = admin_client(settings)
    try:
        mine = [t for t in admin.list_topics() if t.startswith(settings.topic_prefix)]
        if mine:
            admin.delete_topics(mine, timeout_ms=60000)
            time.sleep(5)  # the broker removes their files now, not during the next run
    finally:
        admin.close()


def peak_rss_mb(pid: int) -> float:
    """The process's high-water resident set (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def tree_peak_rss_mb(pid: int) -> float:
    """The sum of the high-water resident sets of ``pid`` and all its descendants: what a
    host split across processes (``--processes``) holds, its supervisor included."""
    children: dict[int, list[int]] = defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        children[int(fields[1])].append(int(stat.parent.name))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += peak_rss_mb(p)
        except (OSError, RuntimeError):
            continue  # exited meanwhile
        todo += children.get(p, [])
    return total


def pg_schemas(url: str, countries: Sequence[str], prefix: str = "nb") -> str:
    """One schema per country in one database, as a hub's PostgreSQL would hold them; the
    URL template that points each country's adapter at its own schema (PostgreSQL folds the
    unquoted nb_FR of the search path to nb_fr)."""
    dsn = sa.make_url(url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for cc in countries:
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{prefix}_{cc.lower()}"')
    sep = "&" if "?" in url else "?"
    return url + sep + f"options=-csearch_path%3D{prefix}_{{country}}"
