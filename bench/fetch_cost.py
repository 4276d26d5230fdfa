"""What replication costs the brokers of a local three-node cluster (issue 18), under Kafka's
follower-fetch settings and some alternatives: the nodes' CPU, read from ``/proc``, while idle
and while one producer (acks=all) writes records into 196 countries' notices and acks topics
at the 196-country run's rate, and that producer's latency. ``BENCH_ONLY=fetchcost``; not part
of a full run.

A leader reads every partition of a follower's fetch session on each fetch (Kafka's
``IncrementalFetchContext.foreachPartition``), so a fetch costs in proportion to the partitions
a node leads rather than to the records it carries."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from kafka import KafkaProducer

from bench.common import say
from bench.report_bench import country_codes
from notice_bus.runtime.kafka import kafka_config
from notice_bus.runtime.local_cluster import LocalCluster
from notice_bus.runtime.settings import Settings
from notice_bus.wire.topics import TopicNames, init_topics

SECONDS = int(os.environ.get("BENCH_FETCH_SECONDS", "60"))
IDLE_SECONDS = 15
RATE = 392  # records/s into each of the notices and the acks topics: 2 notices/s x 196

#: The follower-fetch settings compared; {} is Kafka's defaults.
VARIANTS: tuple[dict[str, str], ...] = (
    {},
    {"replica.fetch.wait.max.ms": "25", "replica.fetch.min.bytes": "65536"},
    {"num.replica.fetchers": "4"},
)


def cpu_seconds(pids: Sequence[int]) -> float:
    """User and system CPU of ``pids`` so far (Linux, ``/proc/PID/stat``)."""
    ticks = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def measure(extra: dict[str, str], countries: Sequence[str]) -> dict[str, Any]:
    with LocalCluster(brokers=3, overrides=extra) as cluster:
        settings = Settings(bootstrap_servers=cluster.bootstrap_servers)
        init_topics(settings, countries)
        names = TopicNames(settings.topic_prefix)
        topics = [t for cc in countries for t in (names.notices(cc), names.acks(cc))]
        producer = KafkaProducer(**kafka_config(settings, "bench-fetch-cost", producer=True))
        pids = [node.pid for node in cluster.nodes if node.pid is not None]
        latencies: list[float] = []
        refused: list[Exception] = []

        def send(n: int) -> None:
            began = time.perf_counter()
            # a key: the notices topics are compacted, and refuse a record without one
            sent = producer.send(topics[n % len(topics)], key=b"%d" % n, value=b"x" * 600)
            sent.add_callback(lambda _meta: latencies.append(time.perf_counter() - began))
            sent.add_errback(refused.append)

        def at_rate(seconds: float) -> None:
            start, n = time.perf_counter(), 0
            while time.perf_counter() - start < seconds:
                send(n)
                n += 1
                time.sleep(max(0.0, start + n / (2 * RATE) - time.perf_counter()))
            producer.flush()

        at_rate(5)  # every partition's leader known, the JIT warm
        latencies.clear()
        time.sleep(3)
        cpu, wall = cpu_seconds(pids), time.monotonic()
        at_rate(SECONDS)
        busy = (cpu_seconds(pids) - cpu) / (time.monotonic() - wall)
        cpu, wall = cpu_seconds(pids), time.monotonic()
        time.sleep(IDLE_SECONDS)
        idle = (cpu_seconds(pids) - cpu) / (time.monotonic() - wall)
        producer.close()
    if refused or not latencies:
        raise RuntimeError(f"fetch cost: {len(refused)} records refused, first {refused[:1]}")
    latencies.sort()
    return {
        "settings": [f"{k}={v}" for k, v in extra.items()],
        "records": len(latencies),
        "brokers_cpu_idle_pct": round(100 * idle, 1),
        "brokers_cpu_busy_pct": round(100 * busy, 1),
        "send_p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
        "send_p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 1),
    }


def fetch_cost() -> dict[str, Any]:
    countries = country_codes(196)
    say(
        f"fetch cost: a three-node cluster with {len(countries)} countries' topics, one producer"
        f" (acks=all) at {2 * RATE} records/s for {SECONDS} s, then {IDLE_SECONDS} s idle;"
        f" the nodes' CPU in % of one core"
    )
    rows = []
    for extra in VARIANTS:
        row = measure(extra, countries)
        rows.append(row)
        name = ", ".join(row["settings"]) or "Kafka's defaults"
        say(
            f"  {name:62} idle {row['brokers_cpu_idle_pct']:5.1f}%"
            f"  busy {row['brokers_cpu_busy_pct']:5.1f}%  send p50 {row['send_p50_ms']:.0f} ms"
            f"  p99 {row['send_p99_ms']:.0f} ms"
        )
    return {"fetch_cost": rows}
