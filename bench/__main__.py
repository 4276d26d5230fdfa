"""`make bench`: every benchmark, its figures printed and merged into bench/results.json.

Sizes come from the environment so a quick look is possible (BENCH_NOTICES=60 make bench; see
bench/common.py), and BENCH_ONLY=<part> runs one part. The parts, in the order of a full run:

    stalls       the raw round trip at 196 countries on a broker with its data on disk, then
                 in memory, with the broker's request and GC logs (bench/stalls.py)
    ingest       a late country's bootstrap of 58,000 notices, and the tracker's ingest
    propagation  HQ's publish -> RECORDED at 1, 10 and 50 countries and on SQLite at 196, each
                 run three times afresh; then 1,000 notices at 196 countries on PostgreSQL, in
                 blocks alternating with the raw kafka-python baseline's (bench/baseline.py)
    review       a bureau's request beside HQ's publish, at 196 countries
    copies       copy verification: an identical copy of 58,000 notices verified (time, bytes
                 on the wire), then 100 differences found and mended (bench/copies_bench.py)
    security     the plain 196-country run and the same on a secured broker
    cluster      the 196-country run on one broker and on a three-broker cluster with three
                 replicas of every topic, both up at once, alternating blocks of notices
    report       `notice-bus report` over 1,000,000 acknowledgement rows

and, only when asked for (BENCH_ONLY=fetchcost), what replication costs a local cluster's
brokers under a few follower-fetch settings (bench/fetch_cost.py).

The defaults are the ones the figures in README.md were measured with.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import copies_bench, fetch_cost, ingest, replicated, report_bench, review_bench, stalls
from bench.baseline import raw_session
from bench.cluster import Cluster, handshakes, plain_cluster, secured_cluster
from bench.common import (
    BLOCKS,
    NOTICES,
    PROCESSES,
    RATE,
    REPEATS,
    SMALL,
    WARMUP,
    pg_schemas,
    postgres,
    record,
    say,
)
from bench.figures import figures, growth_figures, part_p50, show, spread, spread_text
from bench.latencies import Latencies
from bench.propagation import RunResult, adapters, alternate, blocks_of, run_adapters
from bench.report_bench import country_codes

REVIEW_PER_PATH = int(os.environ.get("BENCH_REVIEW_NOTICES", "300"))  # each of publish, request


def propagation(cluster: Cluster, pg_url: str, tmp: Path) -> RunResult:
    """notice-bus at 1, 10 and 50 countries on PostgreSQL and at 196 on SQLite, SMALL notices
    each, every run REPEATS times afresh; then the long run at 196 on PostgreSQL beside the raw
    baseline (:func:`against_baseline`). Returns the 196 run."""
    world = country_codes(196)
    say(
        f"propagation: HQ publishes at {RATE:g}/s to every country; latency = publish call ->"
        f" RECORDED ack on the broker; {WARMUP} untimed notices first in every run; hosts of"
        f" 2 countries or more in {PROCESSES} processes; short runs {REPEATS} times each"
    )
    growth: dict[str, Any] = {}
    for n in (1, 10, 50):
        countries, procs = world[:n], 1 if n == 1 else PROCESSES
        runs = short_runs(cluster, countries, tmp, f"pg{n}", procs, pg_url=pg_url)
        growth[str(n)] = repeated(f"notice-bus, PostgreSQL, {n}", runs, SMALL)
    lite_runs = short_runs(cluster, world, tmp, "sqlite196", PROCESSES)
    lite = repeated("notice-bus, SQLite, 196", lite_runs, SMALL)
    top, base, versus = against_baseline(cluster, pg_url, tmp)
    growth["196"] = growth_figures(top, NOTICES)
    ours, raw = figures(top.latencies), figures(base)
    record(
        {
            "propagation_p50_s": ours["p50_s"],
            "propagation_p95_s": ours["p95_s"],
            "propagation_p99_s": ours["p99_s"],
            "propagation_max_s": ours["max_s"],
            "propagation_pauses_over_1s": ours["pauses_over_1s"],
            "propagation_worst_country": ours["worst_country"],
            "propagation_worst_p99_s": ours["worst_p99_s"],
            "propagation_notices": NOTICES,
            "propagation_warmup_notices": WARMUP,
            "propagation_host_processes": PROCESSES,
            "propagation_baseline_p50_s": raw["p50_s"],
            "propagation_baseline_p99_s": raw["p99_s"],
            "propagation_baseline_max_s": raw["max_s"],
            "propagation_baseline_pauses_over_1s": raw["pauses_over_1s"],
            "propagation_baseline_notices": NOTICES,
            **versus,
            "propagation_sqlite_p50_s": lite["p50_s"],
            "propagation_sqlite_p99_s": lite["p99_s"],
            "propagation_sqlite_p99_spread": lite["p99_spread"],
            "propagation_sqlite_notices": SMALL,
            "propagation_repeats": REPEATS,
            "propagation_hq_part_p50_s": part_p50(top.latencies.hq),
            "propagation_adapter_part_p50_s": part_p50(top.latencies.adapter),
            "adapter_rss_mb": growth["1"]["rss_mb"],
            "host196_rss_mb": round(top.rss_mb, 1),
            "growth": growth,
        }
    )
    return top


def short_runs(
    cluster: Cluster,
    countries: list[str],
    tmp: Path,
    label: str,
    processes: int,
    *,
    pg_url: str | None = None,
) -> list[RunResult]:
    """REPEATS runs of SMALL notices, each on topics and in a database of its own: a schema
    per country in ``pg_url`` (nb0_*, nb1_*, ...), else a SQLite file per country."""
    runs = []
    for k in range(REPEATS):
        if pg_url is not None:
            url = pg_schemas(pg_url, countries, f"nb{k}")
        else:
            url = f"sqlite:///{tmp}/{label}-{k}-{{country}}.db"
        run = run_adapters(
            cluster, countries, url, SMALL, RATE, tmp, f"{label}-{k}",
            processes=processes, warmup=WARMUP,
        )  # fmt: skip
        runs.append(run)
    return runs


def repeated(label: str, runs: list[RunResult], notices: int) -> dict[str, Any]:
    """Each run's line, then the spread of its p50 and p99 over the runs; the figures to
    record are the medians, with the spreads."""
    for k, r in enumerate(runs, 1):
        show(f"{label} #{k}", r.latencies, f"RSS {r.rss_mb:.0f} MiB ({r.processes} p.)")
    each = [figures(r.latencies) for r in runs]
    p50, p99 = spread([f["p50_s"] for f in each]), spread([f["p99_s"] for f in each])
    say(f"{label:28} p50 {spread_text(p50)}  p99 {spread_text(p99)}: median (range, runs)")
    return {
        "p50_s": p50["median"],
        "p95_s": spread([f["p95_s"] for f in each])["median"],
        "p99_s": p99["median"],
        "max_s": max(f["max_s"] for f in each),
        "p50_spread": p50,
        "p99_spread": p99,
        "pauses_over_1s": sum(f["pauses_over_1s"] for f in each),
        "rss_mb": round(max(r.rss_mb for r in runs), 1),
        "processes": runs[0].processes,
        "notices": notices,
        "runs": len(runs),
        "unrecorded": sum(r.missing for r in runs),
    }


def against_baseline(
    cluster: Cluster, pg_url: str, tmp: Path
) -> tuple[RunResult, Latencies, dict[str, Any]]:
    """notice-bus at 196 countries on PostgreSQL and the raw kafka-python baseline
    (bench/baseline.py), both up at once on the same broker, NOTICES notices each at RATE
    in BLOCKS blocks, alternating (:func:`~bench.propagation.alternate`): the floor meets the
    machine that ours meets. Returns ours, the baseline's, and the comparison's figures."""
    world = country_codes(196)
    sizes = blocks_of(NOTICES, BLOCKS)
    say(
        f"  196 countries on PostgreSQL beside the raw baseline: {NOTICES} notices each, in"
        f" {len(sizes)} blocks, alternating"
    )
    with (
        adapters(
            cluster, world, pg_schemas(pg_url, world), NOTICES, tmp, "pg196",
            processes=PROCESSES, warmup=WARMUP,
        ) as ours,
        raw_session(cluster, world, tmp) as raw,
    ):  # fmt: skip
        if WARMUP:
            for session in (ours, raw):
                session.warm_up(WARMUP, RATE)
        alternate([ours, raw], sizes, RATE)
        top, base = ours.result(), raw.result()
        blocks = {
            s.label: spread([s.latencies(ids).overall()["p99"] for ids in s.blocks])
            for s in (ours, raw)
        }
    show("notice-bus, PostgreSQL, 196", top.latencies, f"RSS {top.rss_mb:.0f} MiB")
    show("raw kafka-python, 196", base)
    f, b = figures(top.latencies), figures(base)
    ratio = {k: f[k] / b[k] for k in ("p50_s", "p99_s")}
    say(
        f"  notice-bus / raw: p50 {ratio['p50_s']:.2f}x, p99 {ratio['p99_s']:.2f}x; p99 per"
        f" block: notice-bus {spread_text(blocks[ours.label])}, raw"
        f" {spread_text(blocks[raw.label])}; target p99 < 1 s:"
        f" {'met' if f['p99_s'] < 1.0 else 'NOT met'}"
    )
    versus = {
        "propagation_p50_ratio_to_baseline": round(ratio["p50_s"], 2),
        "propagation_p99_ratio_to_baseline": round(ratio["p99_s"], 2),
        "propagation_block_p99_spread": blocks[ours.label],
        "propagation_baseline_block_p99_spread": blocks[raw.label],
        "propagation_blocks": len(sizes),
    }
    return top, base, versus


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
    only = os.environ.get("BENCH_ONLY", "")
    if only == "fetchcost":  # asked for by name only: no PostgreSQL, no other broker
        record(fetch_cost.fetch_cost())
        return
    tmp = Path(tempfile.mkdtemp(prefix="notice-bus-bench-"))
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
                    replicated.replicated(cluster, tmp)
                if only == "security":
                    plain = world196(cluster, pg_url, tmp)
        if plain is not None and only in ("", "security"):
            secured(plain, pg_url, tmp)
    if only in ("", "report"):
        report_bench.main()

    say(f"bench done in {time.monotonic() - started:.0f} s; figures in bench/results.json")


if __name__ == "__main__":
    main()
