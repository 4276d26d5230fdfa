"""The 196-country run on one broker and on a three-broker cluster whose topics have three
replicas (issue 18), in the same invocation, their blocks of notices alternating."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from bench.cluster import Cluster, replicated_cluster, replication
from bench.common import BLOCKS, NOTICES, PROCESSES, RATE, WARMUP, pg_schemas, postgres, record, say
from bench.figures import figures, growth_figures, load_average, loads
from bench.propagation import adapters, alternate, blocks_of
from bench.report_bench import country_codes


def replicated(one: Cluster, tmp: Path) -> None:
    """The 196-country run on one broker (``one``) and on a three-broker cluster (KRaft,
    512 MiB of heap each) whose topics have three replicas, two of which must have every
    write (HQ's and the adapters' producers send with acks=all), in the same invocation.

    Both deployments are up at once, each with its topics, its host of adapters writing into
    a PostgreSQL of its own (a schema per country; two hosts' 392 connections would not fit
    in one server's 300), its HQ and its watch; each warms up (WARMUP untimed notices), then
    the timed notices go out in BLOCKS blocks per deployment at RATE, alternating
    A B B A A B ..., the other deployment idle meanwhile. So both meet the machine (shared,
    its load drifting) alike, and each meets the broker's once-per-run hold on new topics
    (issue 19) once, as a single run would, not once per block.
    """
    world = country_codes(196)
    sizes = blocks_of(NOTICES, BLOCKS)
    blocks = len(sizes)
    start_load = load_average()
    say(
        f"cluster: 196 countries on one broker and on three (replication factor 3, min ISR 2),"
        f" {NOTICES} notices each at {RATE:g}/s after {WARMUP} untimed, in {blocks} blocks"
        f" each, alternating; load average {loads(start_load)} ({os.cpu_count()} CPUs)"
    )
    began = time.monotonic()
    with replicated_cluster() as three, postgres() as pg1, postgres() as pg3:
        say(f"  three brokers and two PostgreSQL up in {time.monotonic() - began:.0f} s")
        with (
            adapters(
                one, world, pg_schemas(pg1, world, "c1"), NOTICES, tmp, "one196",
                processes=PROCESSES, warmup=WARMUP,
            ) as a,
            adapters(
                three, world, pg_schemas(pg3, world, "c3"), NOTICES, tmp, "rf3x196",
                processes=PROCESSES, warmup=WARMUP,
            ) as b,
        ):  # fmt: skip
            for session in (a, b):
                if WARMUP:
                    warm = session.warm_up(WARMUP, RATE).overall()
                    say(
                        f"  {session.label}: {WARMUP} untimed notices, p50 {warm['p50']:.2f} s,"
                        f" max {warm['max']:.2f} s"
                    )
            timed = time.monotonic()
            block_loads = alternate([a, b], sizes, RATE)
            say(f"  {2 * NOTICES} timed notices sent in {time.monotonic() - timed:.0f} s")
            plain, top = a.result(replication), b.result(replication)
            per_block = {s.label: [s.latencies(ids).overall() for ids in s.blocks] for s in (a, b)}
    end_load = load_average()
    f1, f3 = figures(plain.latencies), figures(top.latencies)
    ratios = {k: f3[k] / f1[k] for k in ("p50_s", "p95_s", "p99_s", "max_s")}
    say(
        f"  196 countries, {NOTICES} notices each at {RATE:g}/s, PostgreSQL, hub in"
        f" {PROCESSES} processes, {WARMUP} untimed first:"
    )
    say(f"  {'':22} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}   worst country p99")
    for name, f in (("one broker, RF 1", f1), ("three brokers, RF 3", f3)):
        say(
            f"  {name:22} {f['p50_s']:7.3f}s {f['p95_s']:7.3f}s {f['p99_s']:7.3f}s"
            f" {f['max_s']:7.3f}s   {f['worst_country']} {f['worst_p99_s']:.3f} s"
        )
    say(
        f"  {'three / one':22} {ratios['p50_s']:7.2f}x {ratios['p95_s']:7.2f}x"
        f" {ratios['p99_s']:7.2f}x {ratios['max_s']:7.2f}x"
    )
    for name, r, label in (("one", plain, a.label), ("three", top, b.label)):
        p99s = " ".join(f"{x['p99']:.2f}" for x in per_block[label])
        say(
            f"  {name:5} samples {int(r.latencies.overall()['n'])}, unrecorded {r.missing},"
            f" hub peak RSS {r.rss_mb:.0f} MiB; p99 per block (s, in order): {p99s}"
        )
    targets = {"p99_under_1s": f3["p99_s"] < 1.0, "p99_within_1_5x": ratios["p99_s"] <= 1.5}
    say(
        f"  targets: three brokers' p99 < 1 s: {'met' if targets['p99_under_1s'] else 'NOT met'}"
        f" ({f3['p99_s']:.3f} s); within 1.5x of one broker's p99:"
        f" {'met' if targets['p99_within_1_5x'] else 'NOT met'} ({ratios['p99_s']:.2f}x)"
    )
    checked = replication_checked(top.facts)
    for name, r in (("one broker", plain), ("three brokers", top)):
        say(f"  replication read back, {name}: {describe_replication(r.facts)}")
    say(
        "  RF 3 and min ISR 2 on every notices and acks topic of the three-broker run: "
        + ("checked" if checked else "NOT so: this was not a replicated cluster")
    )
    say(
        f"  cluster part done in {time.monotonic() - began:.0f} s; load average"
        f" {loads(start_load)} at its start, {loads(end_load)} at its end"
    )
    record(
        {
            "cluster": {
                "notices": NOTICES,
                "rate_per_s": RATE,
                "warmup_notices": WARMUP,
                "blocks": blocks,
                "host_processes": PROCESSES,
                "one_broker": {
                    **growth_figures(plain, NOTICES),
                    "replication": plain.facts,
                    "block_p99_s": [round(x["p99"], 3) for x in per_block[a.label]],
                    "block_load_average": block_loads[a.label],
                },
                "three_brokers": {
                    **growth_figures(top, NOTICES),
                    "replication": top.facts,
                    "block_p99_s": [round(x["p99"], 3) for x in per_block[b.label]],
                    "block_load_average": block_loads[b.label],
                },
                "p50_ratio": round(ratios["p50_s"], 2),
                "p99_ratio": round(ratios["p99_s"], 2),
                "targets_met": targets,
                "replication_checked": checked,
                "load_average": {"start": start_load, "end": end_load},
                "part_s": round(time.monotonic() - began),
            }
        }
    )


def replication_checked(facts: dict[str, Any]) -> bool:
    """Every partition of the run's notices and acks topics on three replicas, with
    min.insync.replicas 2 and no unclean leader election, on a cluster of three brokers."""
    n = facts.get("partitions", 0)
    return bool(n) and (
        facts.get("brokers") == 3
        and facts.get("replicas") == {"3": n}
        and facts.get("min_insync_replicas") == {"2": facts.get("topics")}
        and facts.get("unclean_leader_election") == {"false": facts.get("topics")}
    )


def describe_replication(facts: dict[str, Any]) -> str:
    def counts(tally: dict[str, int]) -> str:
        return ", ".join(f"{k} ({n})" for k, n in tally.items())

    return (
        f"{facts['brokers']} broker(s); {facts['topics']} topics, {facts['partitions']}"
        f" partitions: replicas {counts(facts['replicas'])}, in sync after the run"
        f" {counts(facts['in_sync'])}, leaders on node {counts(facts['leaders'])};"
        f" min.insync.replicas {counts(facts['min_insync_replicas'])},"
        f" unclean.leader.election.enable {counts(facts['unclean_leader_election'])}"
    )
