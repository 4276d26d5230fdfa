"""Where the multi-second pauses come from (issue 19): the raw kafka-python round trip at 196
countries, the same notices at the same rate, on a local broker with its data on this
machine's disk and on one with its data in memory (tmpfs), each broker writing its own
account of every request (``requests.log``) and of every stop of its JVM (``gc.log``).

A client's pause is pinned on the broker when a PRODUCE request took as long in the broker,
and on the disk when the broker with its data in memory has none. Where a pause falls in the
request's time says what held it: ``localTimeMs`` is the request handler's own work (the
append to the log and its indexes), ``requestQueueTimeMs`` a wait for a free handler.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bench.baseline import run_baseline
from bench.cluster import Cluster
from bench.common import say
from bench.latencies import summary
from bench.report_bench import country_codes
from notice_bus.runtime.broker_logs import gc_pauses, slow_requests
from notice_bus.runtime.local_broker import LocalBroker

NOTICES = int(os.environ.get("BENCH_STALL_NOTICES", "240"))  # 2 minutes at 2/s
RATE = 2.0
SLOW_MS = 500.0  # a broker-side request this slow is counted


def on(storage: str, tmp: Path, countries: list[str]) -> dict[str, Any]:
    """The raw round trip on a new broker whose data is on ``storage`` ("disk": the
    benchmark's temporary folder; "memory": ``/dev/shm``), with the broker's evidence."""
    workdir = tmp / f"kafka-{storage}" if storage == "disk" else None
    with LocalBroker(workdir, request_log=True) as broker:
        lat = run_baseline(Cluster(broker.bootstrap_servers), countries, NOTICES, RATE, tmp)
        produce = [
            r for r in slow_requests(broker.workdir / "requests.log", SLOW_MS) if r.api == "PRODUCE"
        ]
        gc = gc_pauses(broker.workdir)
        where = str(broker.workdir)
    overall = summary([v for vs in lat.by_country.values() for v in vs])
    worst = max(produce, key=lambda r: r.total_ms, default=None)
    return {
        "data": where,
        "p50_s": round(overall["p50"], 3),
        "p99_s": round(overall["p99"], 3),
        "max_s": round(overall["max"], 3),
        "pauses_over_1s": lat.pauses(1.0),
        "slow_produce_requests": len(produce),
        "slowest_produce_ms": round(worst.total_ms) if worst else 0,
        "slowest_produce_local_ms": round(worst.local_ms) if worst else 0,
        "slowest_produce_queue_ms": round(worst.queue_ms) if worst else 0,
        "longest_gc_pause_ms": round(max((p.ms for p in gc), default=0.0)),
    }


def stalls(tmp: Path) -> dict[str, Any]:
    world = country_codes(196)
    say(
        f"stalls: raw kafka-python at 196 countries, {NOTICES} notices at {RATE:g}/s, on a"
        " broker with its data on disk, then on one with its data in memory"
    )
    out = {}
    for storage in ("disk", "memory"):
        r = out[storage] = on(storage, tmp, world)
        say(
            f"  data on {storage:6} p50 {r['p50_s']:.2f}  p99 {r['p99_s']:.2f}  max"
            f" {r['max_s']:.2f} s  notices over 1 s: {r['pauses_over_1s']}; broker: PRODUCE"
            f" over {SLOW_MS:.0f} ms: {r['slow_produce_requests']}, slowest"
            f" {r['slowest_produce_ms']} ms ({r['slowest_produce_local_ms']} ms in the"
            f" handler, {r['slowest_produce_queue_ms']} ms queued); longest JVM pause"
            f" {r['longest_gc_pause_ms']} ms"
        )
    return {"stalls": {"notices": NOTICES, "rate_per_s": RATE, **out}}
