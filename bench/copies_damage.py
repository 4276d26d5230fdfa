"""A copy with 100 differences made by hand, and the bureau's check that finds and mends
them (bench/copies_bench.py): the differences, the timed checker, the figures."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from bench.common import say
from bench.copies_wire import Wire, end_offsets, written
from notice_bus.bureau.copies import CopyChecker
from notice_bus.bureau.sinks.sql import SqlSink
from notice_bus.bureau.sinks.tables import RED_NOTICE
from notice_bus.hq.generate import make_drafts
from notice_bus.hq.manifest import Manifests
from notice_bus.hq.publisher import HQ
from notice_bus.runtime.settings import Settings
from notice_bus.wire.digest import Entry
from notice_bus.wire.manifest import (
    ALTERED,
    EXTRA,
    KINDS,
    MISSING,
    RESURRECTED,
    STALE,
    CopyCheck,
    Manifest,
)
from notice_bus.wire.model import ACTIVE, Action, NoticeEvent, utcnow

PER_KIND = 20  # differences made of each kind: 100 in all


class TimedChecker(CopyChecker):
    """The bureau's checker, unchanged, with the seconds of its two slow parts kept: the round
    trip to HQ for the differing buckets, and the mend (reading ``notices.CC``, writing)."""

    ask_s = 0.0
    mend_s = 0.0

    def _ask_hq(self, manifest: Manifest, buckets: Sequence[int]) -> dict[int, Sequence[Entry]]:
        began = time.perf_counter()
        try:
            return super()._ask_hq(manifest, buckets)
        finally:
            self.ask_s = time.perf_counter() - began

    def _mend(self, found: Sequence[tuple[str, str, Entry | None]]) -> set[str]:
        began = time.perf_counter()
        try:
            return super()._mend(found)
        finally:
            self.mend_s = time.perf_counter() - began


def damage(
    url: str, updated: list[str], cancelled: list[str], hq_entries: list[Entry]
) -> dict[str, list[str]]:
    """``PER_KIND`` differences of each kind in the copy at ``url``; the ids by kind."""
    untouched = sorted(e.notice_id for e in hq_entries if e.state == ACTIVE and e.version == 1)
    made = {
        MISSING: untouched[:PER_KIND],
        ALTERED: untouched[PER_KIND : 2 * PER_KIND],
        STALE: updated[:PER_KIND],
        RESURRECTED: cancelled[:PER_KIND],
    }
    t = RED_NOTICE
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.delete(t).where(t.c.notice_id.in_(made[MISSING])))
            conn.execute(  # the update never applied
                sa.update(t).where(t.c.notice_id.in_(made[STALE])).values(version=1)
            )
            conn.execute(  # cancelled notices brought back into service
                sa.update(t)
                .where(t.c.notice_id.in_(made[RESURRECTED]))
                .values(status=ACTIVE, withdrawn_reason=None)
            )
            conn.execute(  # a name changed by hand
                sa.update(t)
                .where(t.c.notice_id.in_(made[ALTERED]))
                .values(name=sa.func.upper(t.c.name) + " (EDITED)")
            )
    finally:
        engine.dispose()
    extra = make_drafts(PER_KIND, seed=99, first_number=900000)  # never sent by HQ
    foreign = SqlSink(url)
    try:
        foreign.force(
            [
                NoticeEvent(
                    notice_id=d.notice_id,
                    version=1,
                    action=Action.PUBLISH,
                    requesting_country=d.requesting_country,
                    published_at=utcnow(),
                    target_countries=(),
                    person=d.person,
                )
                for d in extra
            ]
        )
    finally:
        foreign.close()
    made[EXTRA] = [d.notice_id for d in extra]
    return made


@dataclass
class Checked:
    hq_s: float
    fetch_s: float
    check_s: float
    ask_s: float
    mend_s: float
    total_s: float
    wire: Wire
    result: CopyCheck


def publish_and_fetch(
    manifests: Manifests, checker: CopyChecker, country: str, label: str
) -> tuple[Manifest, int, float, float]:
    """HQ publishes ``country``'s manifest and its bureau reads it back: the manifest, the
    entries HQ sent, and the seconds of each of the two steps."""
    t0 = time.perf_counter()
    [sent] = manifests.publish_all([country])
    t1 = time.perf_counter()
    manifest = checker.latest_manifest()
    t2 = time.perf_counter()
    if manifest is None or manifest.manifest_id != sent.manifest_id:
        raise RuntimeError(f"copies ({label}): the bureau did not read HQ's manifest")
    return manifest, sent.count, t1 - t0, t2 - t1


def check_damaged(
    hq: HQ, bureau: Settings, country: str, url: str, topics: Sequence[str]
) -> Checked:
    """HQ publishes a manifest for ``country``; its bureau checks with ``repair = "mend"``
    (the review service answers its query) and reports."""
    manifests = Manifests(hq)
    sink = SqlSink(url)
    checker = TimedChecker(bureau.with_(repair="mend"), country, sink)
    try:
        before = end_offsets(bureau, topics)
        manifest, _, hq_s, fetch_s = publish_and_fetch(manifests, checker, country, "damaged")
        began = time.perf_counter()
        result = checker.check_once(manifest)
        check_s = time.perf_counter() - began
    finally:
        checker.close()
        sink.close()
    wire = written(bureau, before, end_offsets(bureau, topics))
    total_s = hq_s + fetch_s + check_s
    return Checked(hq_s, fetch_s, check_s, checker.ask_s, checker.mend_s, total_s, wire, result)


def counts_text(result: CopyCheck) -> str:
    return ", ".join(f"{result.counts.get(k, 0)} {k}" for k in KINDS)


def show_checked(label: str, c: Checked) -> None:
    r = c.result
    say(
        f"  {label}: {r.status} {counts_text(r)}; {r.mended} mended"
        + (f"; reason: {r.reason}" if r.reason else "")
    )
    say(
        f"    {c.total_s:.2f} s: HQ manifest {c.hq_s:.2f}, fetch {c.fetch_s:.2f}, check and"
        f" report {c.check_s:.2f} (of which HQ's answer {c.ask_s:.2f}, mend {c.mend_s:.2f})"
    )
    say(f"    wire: {c.wire.text()}")


def checked_figures(c: Checked) -> dict[str, Any]:
    return {
        "status": c.result.status.value,
        "counts": dict(c.result.counts),
        "mended": c.result.mended,
        "total_s": round(c.total_s, 3),
        "hq_manifest_s": round(c.hq_s, 3),
        "bureau_fetch_s": round(c.fetch_s, 3),
        "bureau_check_and_report_s": round(c.check_s, 3),
        "hq_answer_round_trip_s": round(c.ask_s, 3),
        "mend_s": round(c.mend_s, 3),
        "wire_bytes": c.wire.bytes,
        "wire_records": c.wire.records,
        "wire_by_kind": c.wire.figures(),
    }
