"""`make bench`: every benchmark, its figures printed and merged into bench/results.json.

Sizes come from the environment so a quick look is possible (BENCH_NOTICES=60 make bench),
and BENCH_ONLY=<part> runs one part. The parts, in the order of a full run:

    stalls       the raw round trip at 196 countries on a broker with its data on disk, then
                 in memory, with the broker's request and GC logs (bench/stalls.py)
    ingest       a late country's bootstrap of 58,000 notices, and the tracker's ingest
    propagation  HQ's publish -> RECORDED, at 1 to 196 countries (SQLite too), and a baseline
    review       a bureau's request beside HQ's publish, at 196 countries
    copies       copy verification: an identical copy of 58,000 notices verified (time, bytes
                 on the wire), then 100 differences found and mended (bench/copies_bench.py)
    security     the plain 196-country run and the same on a secured broker
    cluster      the 196-country run on one broker and on a three-broker cluster with three
                 replicas of every topic, both up at once, alternating blocks of notices
    report       `notice-bus report` over 1,000,000 acknowledgement rows

The defaults are the ones the figures in README.md were measured with.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

from bench import copies_bench, ingest, report_bench, review_bench, stalls
from bench.cluster import (
    Cluster,
    handshakes,
    plain_cluster,
    replicated_cluster,
    replication,
    secured_cluster,
)
from bench.common import postgres, record, say
from bench.propagation import (
    Latencies,
    RunResult,
    adapters,
    quantile,
    run_adapters,
    run_baseline,
)
from bench.report_bench import country_codes

NOTICES = int(os.environ.get("BENCH_NOTICES", "1000"))  # at 196 countries, PostgreSQL
SMALL = int(os.environ.get("BENCH_SMALL_NOTICES", "40"))  # other runs and the baseline
RATE = 2.0  # notices per second
WARMUP = int(os.environ.get("BENCH_WARMUP_NOTICES", "30"))  # untimed, before each run's timing
PROCESSES = int(os.environ.get("BENCH_HOST_PROCESSES", "2"))  # the host's, from 2 countries on
REVIEW_PER_PATH = int(os.environ.get("BENCH_REVIEW_NOTICES", "300"))  # each of publish, request
CLUSTER_BLOCKS = int(os.environ.get("BENCH_CLUSTER_BLOCKS", "10"))  # per deployment, alternating


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


def pg_schemas(url: str, countries: list[str], prefix: str = "nb") -> str:
    """One schema per country in one database, as a hub's PostgreSQL would hold them; the
    URL template that points each country's adapter at its own schema (PostgreSQL folds the
    unquoted nb_FR of the search path to nb_fr)."""
    dsn = sa.make_url(url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for cc in countries:
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{prefix}_{cc.lower()}"')
    sep = "&" if "?" in url else "?"
    return url + sep + f"options=-csearch_path%3D{prefix}_{{country}}"


def propagation(cluster: Cluster, pg_url: str, tmp: Path) -> RunResult:
    """The baseline, then notice-bus at 1, 10, 50 and 196 countries; returns the 196 run."""
    world = country_codes(196)
    say(
        f"propagation: HQ publishes at {RATE:g}/s to every country; latency = publish call ->"
        f" RECORDED ack on the broker; {WARMUP} untimed notices first in every run; hosts of"
        f" 2 countries or more in {PROCESSES} processes"
    )
    base = run_baseline(cluster, world, SMALL, RATE, tmp, warmup=WARMUP)
    show("raw kafka-python, 196", base)
    growth: dict[str, Any] = {}
    runs: dict[int, RunResult] = {}
    for n, notices in ((1, SMALL), (10, SMALL), (50, SMALL)):
        countries = world[:n]
        procs = 1 if n == 1 else PROCESSES
        r = run_adapters(
            cluster, countries, pg_schemas(pg_url, countries), notices, RATE, tmp, f"pg{n}",
            processes=procs, warmup=WARMUP,
        )  # fmt: skip
        runs[n] = r
        show(f"notice-bus, PostgreSQL, {n}", r.latencies, f"RSS {r.rss_mb:.0f} MiB ({procs} p.)")
        growth[str(n)] = growth_figures(r, notices)
    top = runs[196] = world196(cluster, pg_url, tmp)
    growth["196"] = growth_figures(top, NOTICES)
    lite = run_adapters(
        cluster, world, f"sqlite:///{tmp}/lite-{{country}}.db", SMALL, RATE, tmp, "sqlite196",
        processes=PROCESSES, warmup=WARMUP,
    )  # fmt: skip
    show("notice-bus, SQLite, 196", lite.latencies, f"RSS {lite.rss_mb:.0f} MiB")
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
    return top


def world196(cluster: Cluster, pg_url: str, tmp: Path, schemas: str = "nb") -> RunResult:
    """The figure the others are read against: 196 countries on PostgreSQL, NOTICES timed."""
    world = country_codes(196)
    label = "secured196" if cluster.secured else "pg196"
    r = run_adapters(
        cluster, world, pg_schemas(pg_url, world, schemas), NOTICES, RATE, tmp, label,
        processes=PROCESSES, warmup=WARMUP,
    )  # fmt: skip
    what = "secured" if cluster.secured else "PostgreSQL"
    show(f"notice-bus, {what}, 196", r.latencies, f"RSS {r.rss_mb:.0f} MiB ({PROCESSES} p.)")
    return r


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def loads(values: list[float]) -> str:
    return " ".join(f"{x:.1f}" for x in values)


def secured(plain: RunResult, pg_url: str, tmp: Path) -> None:
    """The 196-country run again on a secured broker: SCRAM-SHA-512 over TLS for every
    client, the broker's ACLs, HQ's Ed25519 signature on every notice checked by the
    adapters, a MAC on every acknowledgement. Its own PostgreSQL schemas (nbs_*), so that
    it writes every notice as new, as the plain run did."""
    world = country_codes(196)
    say("security: a secured broker (SCRAM-SHA-512 over TLS, ACLs), signatures and MACs on")
    with secured_cluster(tmp / "secured", world) as (cluster, broker):
        shakes = handshakes(cluster, broker)
        say(
            f"  a new client's first answer: SCRAM-SHA-512 {shakes['SASL_SSL'] * 1000:.0f} ms,"
            f" mutual TLS {shakes['SSL'] * 1000:.0f} ms (median of 10)"
        )
        top = world196(cluster, pg_url, tmp, schemas="nbs")
    ratio = figures(top.latencies)["p99_s"] / figures(plain.latencies)["p99_s"]
    say(
        f"  p99 secured {figures(top.latencies)['p99_s']:.3f} s, plain"
        f" {figures(plain.latencies)['p99_s']:.3f} s: {ratio:.2f}x"
    )
    record(
        {
            "secured": {
                **growth_figures(top, NOTICES),
                "plain_p50_s": figures(plain.latencies)["p50_s"],
                "plain_p99_s": figures(plain.latencies)["p99_s"],
                "p99_ratio": round(ratio, 2),
                "handshake_scram_ms": round(shakes["SASL_SSL"] * 1000, 1),
                "handshake_mtls_ms": round(shakes["SSL"] * 1000, 1),
            }
        }
    )


def replicated(one: Cluster, tmp: Path) -> None:
    """The 196-country run on one broker (``one``) and on a three-broker cluster (KRaft,
    512 MiB of heap each) whose topics have three replicas, two of which must have every
    write (HQ's and the adapters' producers send with acks=all), in the same invocation.

    Both deployments are up at once, each with its topics, its host of adapters writing into
    a PostgreSQL of its own (a schema per country; two hosts' 392 connections would not fit
    in one server's 300), its HQ and its watch; each warms up (WARMUP untimed notices), then
    the timed notices go out in CLUSTER_BLOCKS blocks per deployment at RATE, alternating
    A B B A A B ..., the other deployment idle meanwhile. So both meet the machine (shared,
    its load drifting) alike, and each meets the broker's once-per-run hold on new topics
    (issue 19) once, as a single run would, not once per block.
    """
    world = country_codes(196)
    blocks = max(1, min(CLUSTER_BLOCKS, NOTICES))
    sizes = [NOTICES // blocks + (1 if i < NOTICES % blocks else 0) for i in range(blocks)]
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
            block_loads: dict[str, list[list[float]]] = {a.label: [], b.label: []}
            for i, size in enumerate(sizes):
                for session in (a, b) if i % 2 == 0 else (b, a):
                    block_loads[session.label].append(load_average())
                    session.publish(size, RATE)
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


def growth_figures(r: RunResult, notices: int) -> dict[str, Any]:
    return {
        **figures(r.latencies),
        "rss_mb": round(r.rss_mb, 1),
        "processes": r.processes,
        "notices": notices,
        "unrecorded": r.missing,
    }


def _p(values: list[float], q: float) -> float:
    return quantile(values, q) if values else float("nan")


def review(cluster: Cluster, pg_url: str, tmp: Path) -> None:
    """A bureau's clean request -> RECORDED at 196 countries, beside HQ's publish in the
    same run (bench/review_bench.py)."""
    world = country_codes(196)
    say(
        f"review: at 196 countries, {REVIEW_PER_PATH} notices by HQ's publish and"
        f" {REVIEW_PER_PATH} by a bureau's request through HQ's review service, alternating,"
        f" {RATE:g}/s in all, after {WARMUP} untimed (both paths)"
    )
    run = review_bench.review_run(
        cluster, world, pg_schemas(pg_url, world, "rv"), tmp,
        per_path=REVIEW_PER_PATH, rate=RATE, warmup=WARMUP, processes=PROCESSES,
    )  # fmt: skip
    show("publish -> RECORDED, 196", run.publish)
    show("request -> RECORDED, 196", run.request)
    found = review_bench.review_figures(run)
    say(
        f"request - publish: p50 {found['review_p50_gap_s']:+.3f} s, p95"
        f" {found['review_p95_gap_s']:+.3f} s, p99 {found['review_p99_gap_s']:+.3f} s"
        f" (target: p99 within 0.3 s); the review service's own p50"
        f" {found['review_service_p50_s']} s (request on the broker -> decision)"
        + (f"; {len(run.held)} requests not published at once" if run.held else "")
    )
    record(found)


def main() -> None:
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="notice-bus-bench-"))
    only = os.environ.get("BENCH_ONLY", "")
    if only in ("", "stalls"):  # its own brokers, one at a time, before anything else runs
        record(stalls.stalls(tmp))
    with postgres() as pg_url:
        plain: RunResult | None = None
        if only in ("", "ingest", "propagation", "review", "copies", "security", "cluster"):
            with plain_cluster() as cluster:
                if only in ("", "ingest"):
                    say("bulk paths on PostgreSQL:")
                    record(ingest.bootstrap(cluster.bootstrap, pg_url, tmp))
                    record(ingest.tracker_ingest(cluster.bootstrap, pg_url, country_codes(196)))
                if only in ("", "propagation"):
                    plain = propagation(cluster, pg_url, tmp)
                if only in ("", "review"):
                    review(cluster, pg_url, tmp)
                if only in ("", "copies"):
                    record(copies_bench.copies(cluster, pg_url, tmp))
                if only in ("", "cluster"):
                    replicated(cluster, tmp)
                if only == "security":
                    plain = world196(cluster, pg_url, tmp)
        if plain is not None and only in ("", "security"):
            secured(plain, pg_url, tmp)
    if only in ("", "report"):
        report_bench.main()
    say(f"bench done in {time.monotonic() - started:.0f} s; figures in bench/results.json")


if __name__ == "__main__":
    main()
