"""Copy verification (issue 17) at today's corpus: is a country's copy of 58,000 notices what
HQ says it should be, and how long do finding and mending 100 differences take?

Everything is real and on this machine: the local Kafka broker, PostgreSQL for HQ and for the
country's copy, HQ's Ed25519 signature on every record it sends and the bureau's MAC on its
report (PLAINTEXT transport; signing is what the bureau checks a manifest and a mended notice
by). The corpus is bench/ingest.py's: HQ holds 58,000 broadcast notices; the country joins
late and ``HQ.bootstrap`` sends it all of them; then live traffic updates ``UPDATED`` notices
and cancels ``CANCELLED``, and the country's real adapter writes the whole notices topic into
its PostgreSQL (and a second adapter, a group of its own, into SQLite): the copy is the one
the bureau would hold.

Verification of the identical copy, ``REPEAT`` times (a fresh ``Manifests`` and a fresh
``CopyChecker`` each time, as ``notice-bus verify`` and ``notice-bus copy-check --once`` run:
HQ's hash cache empty, the bureau's producer not connected yet):

* HQ: its records -> expected entries -> digest -> manifest signed and on ``manifests.CC``;
* bureau: the latest manifest read back from the topic, its copy listed (``Sink.entries``),
  digested and compared -> VERIFIED, then the CopyCheck sent on ``acks.CC`` (MAC'd).

The bytes on the wire are read back from the topics (``manifests.CC``, ``requests.CC``,
``acks.CC``) between their end offsets before and after: each record's key + value + headers
(not the record batch's framing).

Then 100 differences, 20 of each kind, made in the PostgreSQL copy by hand (as a faulty tool
or an operator would): 20 rows deleted (missing), 20 updates rolled back to version 1
(stale), 20 cancelled notices set ACTIVE again (resurrected), 20 names changed (altered) and
20 notices HQ never sent (extra). HQ's review service (``Intake``, in a thread, with an HQ of
its own on the same database) answers the bureau's query over Kafka, and the check runs with
``repair = "mend"``; then a second check, which must find only the 40 that are never mended
(extra, altered).
"""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.cluster import Cluster
from bench.common import drop_topics, say
from bench.copies_damage import (
    PER_KIND,
    check_damaged,
    checked_figures,
    damage,
    publish_and_fetch,
    show_checked,
)
from bench.copies_wire import Wire, end_offsets, topic_records, written
from bench.figures import spread
from bench.ingest import hq_corpus, load_copy, new_database
from notice_bus.bureau.copies import CopyChecker
from notice_bus.bureau.sinks.sql import SqlSink
from notice_bus.hq.generate import revise
from notice_bus.hq.intake import Intake
from notice_bus.hq.manifest import Manifests, expected_entries
from notice_bus.hq.publisher import HQ
from notice_bus.runtime.settings import Settings
from notice_bus.trust.pki import issue
from notice_bus.wire.digest import Entry
from notice_bus.wire.manifest import (
    ALTERED,
    CHECK,
    EXTRA,
    KINDS,
    MANIFEST,
    CopyCheck,
    CopyStatus,
)
from notice_bus.wire.model import WITHDRAWN
from notice_bus.wire.topics import TopicNames, init_topics

COUNTRY = "ZZ"
UPDATED = 200  # notices updated after the country joined (version 2)
CANCELLED = 200  # notices cancelled after it joined (WITHDRAWN)
REPEAT = 5  # verifications of the identical PostgreSQL copy
REPEAT_SQLITE = 3
WIRE_BUDGET = 64 * 1024  # the issue's bound for an identical copy's messages
TARGET_S = 5.0  # the issue's target for verifying it


def trust(tmp: Path, base: Settings) -> tuple[Settings, Settings]:
    """HQ's and the bureau's settings with the keys ``notice-bus pki`` issues: HQ signs (and
    publishes its keyring), the bureau checks HQ's signatures and MACs its report."""
    pki = tmp / "copies-pki"
    issue(pki, countries=[COUNTRY])
    root = str(pki / "signing" / "root.pub")
    hq = base.with_(
        signing_key_file=str(pki / "hq" / "signing.key"),
        keyring_file=str(pki / "signing" / "keyring.json"),
        root_key_file=root,
        ack_master_file=str(pki / "signing" / "ack-master.key"),
    )
    bureau = base.with_(
        root_key_file=root, ack_key_file=str(pki / f"bureau-{COUNTRY}" / "ack.keys")
    )
    return hq, bureau


def shape(entries: Sequence[Entry]) -> tuple[int, int, int]:
    """(rows, sum of versions, withdrawn rows): what the copy must show once loaded."""
    return (
        len(entries),
        sum(e.version for e in entries),
        sum(e.state == WITHDRAWN for e in entries),
    )


_SHAPE = sa.text(
    "SELECT count(*), coalesce(sum(version), 0),"
    f" coalesce(sum(CASE WHEN status = '{WITHDRAWN}' THEN 1 ELSE 0 END), 0) FROM red_notice"
)


def build(hq: HQ, settings: Settings) -> tuple[int, list[str], list[str]]:
    """HQ's corpus, the country's late join and the live traffic after it; returns how many
    notices the bootstrap queued, and the ids updated and cancelled."""
    drafts = hq_corpus(hq)
    init_topics(settings, [COUNTRY])
    began = time.monotonic()
    queued = hq.bootstrap(COUNTRY)
    say(f"  HQ sent {queued:,} notices to {COUNTRY} ({time.monotonic() - began:.0f} s)")
    updated, cancelled = drafts[:UPDATED], drafts[UPDATED : UPDATED + CANCELLED]
    rng = random.Random(17)
    hq.publish([revise(d, rng) for d in updated])
    for d in cancelled:
        hq.cancel(d.notice_id, "arrested", relay=False)
    hq.relay()
    return queued, [d.notice_id for d in updated], [d.notice_id for d in cancelled]


@dataclass
class Verified:
    hq_s: float
    fetch_s: float
    check_s: float
    report_s: float
    total_s: float
    wire: Wire
    result: CopyCheck


def verify_identical(
    hq: HQ, bureau: Settings, url: str, topics: Sequence[str], label: str
) -> Verified:
    """One verification of the identical copy at ``url``, end to end; fails loudly if it is
    not VERIFIED, or its messages reach the budget."""
    manifests = Manifests(hq)  # a fresh hash cache, as a newly started HQ has
    sink = SqlSink(url)
    checker = CopyChecker(bureau, COUNTRY, sink)
    try:
        before = end_offsets(bureau, topics)
        manifest, sent, hq_s, fetch_s = publish_and_fetch(manifests, checker, COUNTRY, label)
        t2 = time.perf_counter()
        result = checker.check_once(manifest, send=False)
        t3 = time.perf_counter()
        checker.report(result)
        t4 = time.perf_counter()
    finally:
        checker.close()
        sink.close()
    wire = written(bureau, before, end_offsets(bureau, topics))
    if result.status is not CopyStatus.VERIFIED:
        raise RuntimeError(f"copies ({label}): the identical copy is {result}")
    if (result.held, result.expected) != (sent, sent):
        raise RuntimeError(f"copies ({label}): held/expected {result.held}/{result.expected}")
    if set(wire.by_kind) != {MANIFEST, CHECK}:
        raise RuntimeError(f"copies ({label}): more than a manifest and a report: {wire.text()}")
    if wire.bytes >= WIRE_BUDGET:
        raise RuntimeError(f"copies ({label}): {wire.text()}, not under {WIRE_BUDGET:,} B")
    total_s = hq_s + fetch_s + t4 - t2
    return Verified(hq_s, fetch_s, t3 - t2, t4 - t3, total_s, wire, result)


def warm_manifests(hq: HQ) -> list[float]:
    """Seconds of ``REPEAT_SQLITE`` manifests by one ``Manifests`` after a first round, as
    the review service sends them every ``manifest_interval_s``."""
    manifests = Manifests(hq)
    manifests.publish_all([COUNTRY])  # the first round: every content hash computed
    runs = []
    for _ in range(REPEAT_SQLITE):
        began = time.perf_counter()
        manifests.publish_all([COUNTRY])
        runs.append(time.perf_counter() - began)
    return runs


def show_spread(label: str, runs: Sequence[Verified]) -> dict[str, Any]:
    parts = {
        "total": [r.total_s for r in runs],
        "hq_manifest": [r.hq_s for r in runs],
        "bureau_fetch": [r.fetch_s for r in runs],
        "bureau_check": [r.check_s for r in runs],
        "bureau_report": [r.report_s for r in runs],
    }
    say(f"  {label}, {len(runs)} runs, min / median / max:")
    for name, values in parts.items():
        s = spread(values)
        say(f"    {name:14} {s['min']:6.2f} / {s['median']:6.2f} / {s['max']:6.2f} s")
    say(f"    wire: {runs[0].wire.text()} (every run: {sorted({r.wire.bytes for r in runs})})")
    seen = sorted(runs[0].wire.headers.items())
    heads = "; ".join(f"{kind}: {', '.join(sorted(names))}" for kind, names in seen)
    say(f"    record headers: {heads}")
    return {
        "runs": len(runs),
        **{name: spread(values) for name, values in parts.items()},
        "runs_total_s": [round(r.total_s, 3) for r in runs],
        "wire_bytes": max(r.wire.bytes for r in runs),
        "wire_records": runs[0].wire.records,
        "wire_by_kind": {
            k: {"records": n, "bytes": b} for k, (n, b) in runs[0].wire.by_kind.items()
        },
    }


def copies(cluster: Cluster, pg_url: str, tmp: Path) -> dict[str, Any]:
    began = time.monotonic()
    load = os.getloadavg()
    say(
        f"copies: HQ's corpus, {COUNTRY}'s late join and its copies; load average"
        f" {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} ({os.cpu_count()} CPUs)"
    )
    base = Settings(
        bootstrap_servers=cluster.bootstrap,
        topic_prefix=f"b{uuid.uuid4().hex[:6]}.copies.",
        partitions=1,
        manifest_interval_s=0,  # manifests when this benchmark asks, not at the service's start
    )
    hq_settings, bureau = trust(tmp, base)
    hq_settings = hq_settings.with_(
        hq_database_url=new_database(pg_url, f"hq_{uuid.uuid4().hex[:6]}")
    )
    names = TopicNames(base.topic_prefix)
    topics = [names.manifests(COUNTRY), names.requests(COUNTRY), names.acks(COUNTRY)]
    init_topics(base, [])  # no country yet: HQ only records the notices
    out: dict[str, Any] = {}
    with HQ(hq_settings) as hq:
        queued, updated, cancelled = build(hq, base)
        expected = expected_entries(hq.engine, names, COUNTRY)
        want = shape(expected)
        say(
            f"  {COUNTRY} should hold {want[0]:,} notices ({want[2]} withdrawn);"
            f" {queued:,} by bootstrap, then {UPDATED} updates and {CANCELLED} cancels"
        )

        def loaded(conn: sa.Connection) -> bool:
            return tuple(int(v) for v in conn.execute(_SHAPE).one()) == want

        pg_copy = new_database(pg_url, f"copy_{uuid.uuid4().hex[:6]}")
        took = load_copy(bureau, COUNTRY, pg_copy, loaded)
        say(f"  the adapter wrote the copy into PostgreSQL in {took:.1f} s")
        lite_copy = f"sqlite:///{tmp}/copies-{COUNTRY}.db"
        took = load_copy(bureau, COUNTRY, lite_copy, loaded, hub="copies-lite")
        say(f"  a second adapter (its own group) wrote it into SQLite in {took:.1f} s")

        say(f"copies: verifying the identical copy of {want[0]:,} notices")
        pg_runs = [
            verify_identical(hq, bureau, pg_copy, topics, "PostgreSQL") for _ in range(REPEAT)
        ]
        out["copies_verify_pg"] = show_spread("HQ PostgreSQL, copy PostgreSQL", pg_runs)
        warm = spread(warm_manifests(hq))
        out["copies_verify_pg"]["hq_manifest_hashes_known"] = warm
        say(
            f"    HQ manifest with its hashes known (the running service's every round after"
            f" its first): {warm['min']:.2f} / {warm['median']:.2f} / {warm['max']:.2f} s"
        )
        lite_runs = [
            verify_identical(hq, bureau, lite_copy, topics, "SQLite") for _ in range(REPEAT_SQLITE)
        ]
        out["copies_verify_sqlite"] = show_spread("HQ PostgreSQL, copy SQLite", lite_runs)

        made = damage(pg_copy, updated, cancelled, expected)
        say(
            f"copies: {sum(len(v) for v in made.values())} differences made in the PostgreSQL"
            f" copy ({', '.join(f'{len(v)} {k}' for k, v in made.items())}); HQ's review"
            " service answers the query, repair = mend"
        )
        intake = Intake(hq_settings)
        stop = threading.Event()
        service = threading.Thread(target=intake.run, args=(stop,), name="review", daemon=True)
        service.start()
        try:
            first = check_damaged(hq, bureau, COUNTRY, pg_copy, topics)
            show_checked("first check", first)
            read = topic_records(base, names.notices(COUNTRY))
            say(f"    the mend read {names.notices(COUNTRY)} from its start: {read:,} records")
            second = check_damaged(hq, bureau, COUNTRY, pg_copy, topics)
            show_checked("second check", second)
        finally:
            stop.set()
            service.join(30)
            intake.close()
    drop_topics(base)

    failures = []
    if first.result.counts != {k: PER_KIND for k in KINDS} or first.result.reason:
        failures.append(f"first check: {first.result}")
    if first.result.mended != 3 * PER_KIND:
        failures.append(f"first check mended {first.result.mended}, not {3 * PER_KIND}")
    leftover = {k: PER_KIND if k in (EXTRA, ALTERED) else 0 for k in KINDS}
    if second.result.counts != leftover or second.result.mended:
        failures.append(f"second check: {second.result}")
    if failures:
        raise RuntimeError("copies: " + "; ".join(failures))

    median = statistics.median(r.total_s for r in pg_runs)
    say(
        f"copy verification of {want[0]:,} notices (PostgreSQL): median {median:.2f} s"
        f" (target < {TARGET_S:g} s), {pg_runs[0].wire.bytes:,} B on the wire"
        f" (bound {WIRE_BUDGET:,} B); {sum(first.result.counts.values())} differences found"
        f" and {first.result.mended} mended in {first.total_s:.2f} s ({first.wire.bytes:,} B)"
    )
    end = os.getloadavg()
    say(
        f"  copies part done in {time.monotonic() - began:.0f} s; load average"
        f" {end[0]:.1f} {end[1]:.1f} {end[2]:.1f}"
    )
    out["copies_load_average"] = {
        "start": [round(x, 2) for x in load],
        "end": [round(x, 2) for x in end],
    }
    out["copies_notices"] = want[0]
    out["copies_damage"] = {
        "made": {k: len(v) for k, v in made.items()},
        "first": checked_figures(first),
        "second": checked_figures(second),
        "mend_read_records": read,
    }
    out["copies_verify_target_s"] = TARGET_S
    out["copies_wire_budget_bytes"] = WIRE_BUDGET
    return out
