"""`make bench`: every benchmark, its figures printed and merged into bench/results.json.

Sizes come from the environment so a quick look is possible (BENCH_NOTICES=60 make bench),
and BENCH_ONLY=ingest|propagation|report runs one part; the defaults are the ones the
figures in README.md were measured with.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

from bench import ingest, report_bench
from bench.common import postgres, record, say
from bench.propagation import Latencies, RunResult, quantile, run_adapters, run_baseline
from bench.report_bench import country_codes
from notice_bus.runtime.local_broker import LocalBroker

NOTICES = int(os.environ.get("BENCH_NOTICES", "1000"))  # at 196 countries, PostgreSQL
SMALL = int(os.environ.get("BENCH_SMALL_NOTICES", "40"))  # other runs and the baseline
RATE = 2.0  # notices per second
WARMUP = int(os.environ.get("BENCH_WARMUP_NOTICES", "30"))  # untimed, before each run's timing
PROCESSES = int(os.environ.get("BENCH_HOST_PROCESSES", "2"))  # the host's, from 2 countries on


def figures(lat: Latencies) -> dict[str, Any]:
    overall = lat.overall()
    worst_cc, worst = lat.worst()
    return {
        "p50_s": round(overall["p50"], 3),
        "p95_s": round(overall["p95"], 3),
        "p99_s": round(overall["p99"], 3),
        "max_s": round(overall["max"], 3),
        "samples": int(overall["n"]),
        "worst_country": worst_cc,
        "worst_p99_s": round(worst["p99"], 3),
        "worst_max_s": round(worst["max"], 3),
    }


def show(label: str, lat: Latencies, extra: str = "") -> None:
    f = figures(lat)
    say(
        f"{label:28} p50 {f['p50_s']:6.2f}  p95 {f['p95_s']:6.2f}  p99 {f['p99_s']:6.2f}"
        f"  max {f['max_s']:6.2f} s  worst {f['worst_country']} p99 {f['worst_p99_s']:.2f} s"
        + (f"  {extra}" if extra else "")
    )


def pg_schemas(url: str, countries: list[str]) -> str:
    """One schema per country in one database, as a hub's PostgreSQL would hold them; the
    URL template that points each country's adapter at its own schema (PostgreSQL folds the
    unquoted nb_FR of the search path to nb_fr)."""
    dsn = sa.make_url(url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for cc in countries:
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "nb_{cc.lower()}"')
    sep = "&" if "?" in url else "?"
    return url + sep + "options=-csearch_path%3Dnb_{country}"


def propagation(bootstrap: str, pg_url: str, tmp: Path) -> None:
    world = country_codes(196)
    say(
        f"propagation: HQ publishes at {RATE:g}/s to every country; latency = publish call ->"
        f" RECORDED ack on the broker; {WARMUP} untimed notices first in every run; hosts of"
        f" 2 countries or more in {PROCESSES} processes"
    )
    base = run_baseline(bootstrap, world, SMALL, RATE, tmp, warmup=WARMUP)
    show("raw kafka-python, 196", base)
    growth: dict[str, Any] = {}
    runs: dict[int, RunResult] = {}
    for n, notices in ((1, SMALL), (10, SMALL), (50, SMALL), (196, NOTICES)):
        countries = world[:n]
        template = pg_schemas(pg_url, countries)
        procs = 1 if n == 1 else PROCESSES
        r = run_adapters(
            bootstrap, countries, template, notices, RATE, tmp, f"pg{n}",
            processes=procs, warmup=WARMUP,
        )  # fmt: skip
        runs[n] = r
        show(f"notice-bus, PostgreSQL, {n}", r.latencies, f"RSS {r.rss_mb:.0f} MiB ({procs} p.)")
        growth[str(n)] = {
            **figures(r.latencies),
            "rss_mb": round(r.rss_mb, 1),
            "processes": procs,
            "notices": notices,
            "unrecorded": r.missing,
        }
    lite = run_adapters(
        bootstrap, world, f"sqlite:///{tmp}/lite-{{country}}.db", SMALL, RATE, tmp, "sqlite196",
        processes=PROCESSES, warmup=WARMUP,
    )  # fmt: skip
    show("notice-bus, SQLite, 196", lite.latencies, f"RSS {lite.rss_mb:.0f} MiB")
    top = runs[196]
    record(
        {
            "propagation_p50_s": figures(top.latencies)["p50_s"],
            "propagation_p95_s": figures(top.latencies)["p95_s"],
            "propagation_p99_s": figures(top.latencies)["p99_s"],
            "propagation_max_s": figures(top.latencies)["max_s"],
            "propagation_worst_country": figures(top.latencies)["worst_country"],
            "propagation_worst_p99_s": figures(top.latencies)["worst_p99_s"],
            "propagation_notices": NOTICES,
            "propagation_warmup_notices": WARMUP,
            "propagation_host_processes": PROCESSES,
            "propagation_baseline_p50_s": figures(base)["p50_s"],
            "propagation_baseline_p99_s": figures(base)["p99_s"],
            "propagation_baseline_notices": SMALL,
            "propagation_sqlite_p50_s": figures(lite.latencies)["p50_s"],
            "propagation_sqlite_p99_s": figures(lite.latencies)["p99_s"],
            "propagation_sqlite_notices": SMALL,
            "propagation_hq_part_p50_s": round(_p(top.latencies.hq, 0.5), 3),
            "propagation_adapter_part_p50_s": round(_p(top.latencies.adapter, 0.5), 3),
            "adapter_rss_mb": round(runs[1].rss_mb, 1),
            "host196_rss_mb": round(top.rss_mb, 1),
            "growth": growth,
        }
    )


def _p(values: list[float], q: float) -> float:
    return quantile(values, q) if values else float("nan")


def main() -> None:
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="notice-bus-bench-"))
    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
    if not bootstrap:
        broker = LocalBroker(tmp / "kafka")
        bootstrap = broker.start()
    try:
        with postgres() as pg_url:
            if os.environ.get("BENCH_ONLY", "") in ("", "ingest"):
                say("bulk paths on PostgreSQL:")
                record(ingest.bootstrap(bootstrap, pg_url, tmp))
                record(ingest.tracker_ingest(bootstrap, pg_url, country_codes(196)))
            if os.environ.get("BENCH_ONLY", "") in ("", "propagation"):
                propagation(bootstrap, pg_url, tmp)
    finally:
        if broker is not None:
            broker.stop()
    if os.environ.get("BENCH_ONLY", "") in ("", "report"):
        report_bench.main()
    say(f"bench done in {time.monotonic() - started:.0f} s; figures in bench/results.json")


if __name__ == "__main__":
    main()
