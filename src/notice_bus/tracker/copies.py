"""The bureaus' copy checks, HQ's side: stored one row per check in ``tracker_copy_check``,
and each country's copy as its latest check tells, for the report, escalation and metrics.

A bureau checks its national copy against each of HQ's manifests and reports a
:class:`~notice_bus.wire.manifest.CopyCheck` on its acks topic, beside its acknowledgements:
the record header ``nb-kind: copy-check`` tells it apart, it carries the bureau's MAC as they
do (checked by the ingest before anything is read), and it never counts as an
acknowledgement. Few records, so a plain insert in the batch's transaction, keyed by
(country, manifest, the bureau's time of the check): a replayed check stores nothing twice,
and a check of the same manifest again (after a mend) is stored beside the first.

A country's copy is what its **latest** check says (broker time): VERIFIED, DRIFT (with the
differences by kind that are still there: those the adapter did not mend) or UNVERIFIABLE.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from notice_bus.errors import InvalidNotice
from notice_bus.runtime.db import as_utc, dialect_insert
from notice_bus.tracker.reconcile import Row
from notice_bus.tracker.tables import COPY_CHECK
from notice_bus.wire.manifest import KINDS, MISSING, RESURRECTED, STALE, CopyStatus

__all__ = [
    "COPY_COLUMNS",
    "CopyState",
    "copy_row",
    "latest_checks",
    "store_checks",
    "unmended",
]

#: The order of a row's values (:func:`copy_row` makes them).
COPY_COLUMNS = (
    "country", "manifest_id", "at", "broker_at", "status", "held", "expected", *KINDS,
    "mended", "examples", "reason",
)  # fmt: skip
#: What the adapter mends (the others are reported only), in the order mended ones beyond
#: the examples are taken off.
_MENDABLE = (MISSING, STALE, RESURRECTED)
_INT32 = 2**31 - 1
_MANIFEST_ID: int = getattr(COPY_CHECK.c.manifest_id.type, "length", None) or 64
_EXAMPLES = 100  # as the bureau sends at most
_NOTICE_ID = 32  # an example's notice id, cut (it is for people)
_REASON = 2000


def copy_row(country: str | None, data: dict[str, Any], broker_at: datetime) -> Row:
    """A decoded ``CopyCheck``'s row of ``tracker_copy_check`` in :data:`COPY_COLUMNS` order;
    raises one of :data:`notice_bus.tracker.rows.UNREADABLE` for a record to quarantine."""
    if data["country"] != country:  # ACLs confine a bureau to its own acks topic
        raise InvalidNotice(
            f"a copy check of {str(data['country'])[:8]!r} on {country}'s topic", field="country"
        )
    manifest_id = data["manifest_id"]
    if not isinstance(manifest_id, str) or not 0 < len(manifest_id) <= _MANIFEST_ID:
        shown = repr(manifest_id)[:60]
        why = f"must be text of 1 to {_MANIFEST_ID} characters, got {shown}"
        raise InvalidNotice(why, field="manifest_id")
    status = CopyStatus(data["status"]).value
    counts = [_count(data, name) for name in ("held", "expected", *KINDS, "mended")]
    examples = [
        [_clean(str(e["notice_id"]))[:_NOTICE_ID], _clean(str(e["kind"]))[:16], bool(e["mended"])]
        for e in data.get("examples", ())[:_EXAMPLES]
    ]
    reason = data.get("reason")
    reason = _clean(reason)[:_REASON] if isinstance(reason, str) else None
    return (
        country, manifest_id, data["at"], broker_at, status, *counts,
        json.dumps(examples, ensure_ascii=False), reason,
    )  # fmt: skip


def store_checks(conn: Connection, rows: Sequence[Row]) -> None:
    """Store copy checks (rows in :data:`COPY_COLUMNS` order), in the caller's transaction;
    a check already stored is kept as it is."""
    if not rows:
        return
    unique = {(r[0], r[1], r[2]): dict(zip(COPY_COLUMNS, r, strict=True)) for r in reversed(rows)}
    insert = dialect_insert(conn)(COPY_CHECK).on_conflict_do_nothing()
    conn.execute(insert, list(unique.values()))


def unmended(
    counts: dict[str, int], mended: int, examples: Sequence[tuple[str, str, bool]]
) -> dict[str, int]:
    """The differences still there, by kind (kinds without any left out): the counts less
    the mended ones. The examples say of which kind each mended one was; mended ones beyond
    the examples (a check lists 100 at most) are taken off the mendable kinds, missing, stale
    and resurrected, in that order."""
    left = {k: max(0, int(counts.get(k, 0))) for k in KINDS}
    seen = Counter(kind for _, kind, was_mended in examples if was_mended and kind in left)
    for kind, n in seen.items():
        left[kind] = max(0, left[kind] - n)
    rest = mended - sum(seen.values())
    for kind in _MENDABLE:
        taken = min(max(rest, 0), left[kind])
        left[kind] -= taken
        rest -= taken
    return {k: n for k, n in left.items() if n > 0}


@dataclass(frozen=True, slots=True)
class CopyState:
    """A country's copy as its latest check tells: its status, when it arrived (broker
    time), when a check last found the copy VERIFIED (None: never), the differences still
    there by kind, how many the adapter mended, why (UNVERIFIABLE, or a partial check), and
    up to ten differences still there as (notice id, kind)."""

    country: str
    manifest_id: str
    status: CopyStatus
    checked_at: datetime
    verified_at: datetime | None
    drift: dict[str, int] = field(default_factory=dict)
    mended: int = 0
    reason: str | None = None
    examples: list[tuple[str, str]] = field(default_factory=list)

    @property
    def drifting(self) -> bool:
        """The latest check found differences that are still there."""
        return self.status is CopyStatus.DRIFT and bool(self.drift)


def latest_checks(conn: Connection) -> dict[str, CopyState]:
    """Per country with any check, its copy as its latest check tells (see :class:`CopyState`)."""
    c = COPY_CHECK.c
    newest = select(c.country, func.max(c.broker_at).label("newest")).group_by(c.country)
    newest_sub = newest.subquery()
    query = select(COPY_CHECK).join(
        newest_sub, (c.country == newest_sub.c.country) & (c.broker_at == newest_sub.c.newest)
    )
    latest: dict[str, Any] = {}
    for r in conn.execute(query):
        kept = latest.get(r.country)
        if kept is None or (as_utc(r.at), r.manifest_id) > (as_utc(kept.at), kept.manifest_id):
            latest[r.country] = r  # two in the same millisecond: the bureau's later one
    verified_q = (
        select(c.country, func.max(c.broker_at))
        .where(c.status == CopyStatus.VERIFIED.value)
        .group_by(c.country)
    )
    verified = {cc: as_utc(at) for cc, at in conn.execute(verified_q) if at is not None}
    out: dict[str, CopyState] = {}
    for cc, r in sorted(latest.items()):
        status = CopyStatus(r.status)
        examples = [(str(n), str(k), bool(m)) for n, k, m in json.loads(r.examples or "[]")]
        drift: dict[str, int] = {}
        if status is CopyStatus.DRIFT:
            drift = unmended({k: getattr(r, k) for k in KINDS}, r.mended, examples)
        out[cc] = CopyState(
            country=cc,
            manifest_id=r.manifest_id,
            status=status,
            checked_at=as_utc(r.broker_at),
            verified_at=verified.get(cc),
            drift=drift,
            mended=r.mended,
            reason=r.reason,
            examples=[(n, k) for n, k, m in examples if not m and k in drift][:10],
        )
    return out


def _count(data: dict[str, Any], name: str) -> int:
    value = data.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _INT32:
        raise InvalidNotice(f"must be an integer 0 to {_INT32}, got {value!r}", field=name)
    return value


def _clean(text: str) -> str:
    return text.replace("\x00", "\ufffd") if "\x00" in text else text
