"""Parked records and replays as ``notice-bus dlq`` prints them: a table, JSON, a summary."""

from __future__ import annotations

import json
from collections.abc import Sequence

from notice_bus.bureau.dlq import Parked, ReplayResult


def to_json(parked: Sequence[Parked]) -> str:
    rows = [
        {
            "partition": p.partition,
            "offset": p.offset,
            "broker_at": p.broker_at.isoformat(),
            "key": p.key,
            "source_topic": p.source.topic if p.source else None,
            "source_partition": p.source.partition if p.source else None,
            "source_offset": p.source.offset if p.source else None,
            "reason": p.reason,
            "adapter": p.adapter,
            "replayed": p.replayed,
            "state": p.state,
            "unreplayable": p.unreplayable,
        }
        for p in parked
    ]
    return json.dumps(rows, indent=2, ensure_ascii=False)


def to_table(parked: Sequence[Parked], topic: str) -> str:
    if not parked:
        return f"{topic} is empty: nothing parked"
    head = ("OFFSET", "PARKED AT", "KEY", "SOURCE", "STATE", "REASON")
    one_partition = len({p.partition for p in parked}) == 1
    body = [
        (
            str(p.offset) if one_partition else f"{p.partition}:{p.offset}",
            p.broker_at.strftime("%Y-%m-%d %H:%M:%S"),
            p.key,
            p.where,
            p.state,
            _one_line(p.reason if p.unreplayable is None else f"{p.reason} ({p.unreplayable})"),
        )
        for p in parked
    ]
    widths = [max(len(row[i]) for row in (head, *body)) for i in range(len(head) - 1)]
    lines = [
        "  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]])
        for row in (head, *body)
    ]
    return "\n".join(lines)


def summary(result: ReplayResult) -> str:
    """``replayed N: recorded R, parked again P``, then one line per record parked again or
    passed over."""
    if not result.replayed and not result.skipped:
        return f"nothing to replay in {result.topic}"
    lines = [
        f"replayed {result.replayed} from {result.topic}: recorded {result.recorded},"
        f" parked again {len(result.parked_again)}"
        + (f", skipped {len(result.skipped)}" if result.skipped else "")
    ]
    lines += [
        f"  parked again {p.key} {p.where}: {_one_line(p.reason)}" for p in result.parked_again
    ]
    lines += [
        f"  skipped {result.topic}@{p.offset} {p.key}: {p.unreplayable}; left parked"
        for p in result.skipped
    ]
    return "\n".join(lines)


def _one_line(text: str) -> str:
    """A driver's multi-line message (PostgreSQL's DETAIL) on one line of a table."""
    return " ".join(text.split())
