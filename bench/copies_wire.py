"""What a copy verification writes on the wire: the records between two sets of end offsets
of its topics, read back from the broker (bench/copies_bench.py)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kafka import KafkaConsumer, TopicPartition

from notice_bus.runtime.kafka import kafka_config
from notice_bus.runtime.settings import Settings
from notice_bus.wire.manifest import kind_of


@dataclass
class Wire:
    """The records written on the verification's topics between two sets of end offsets."""

    records: int = 0
    bytes: int = 0
    by_kind: dict[str, tuple[int, int]] = field(default_factory=dict)  # kind: (records, bytes)
    headers: dict[str, set[str]] = field(default_factory=dict)  # kind: its records' headers

    def figures(self) -> dict[str, dict[str, int]]:
        return {k: {"records": n, "bytes": b} for k, (n, b) in sorted(self.by_kind.items())}

    def text(self) -> str:
        kinds = ", ".join(f"{k} {n} ({b:,} B)" for k, (n, b) in sorted(self.by_kind.items()))
        return f"{self.bytes:,} B in {self.records} records: {kinds}"


def end_offsets(settings: Settings, topics: Sequence[str]) -> dict[TopicPartition, int]:
    consumer = KafkaConsumer(**kafka_config(settings, "bench-copies-wire"))
    try:
        parts = [
            TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()
        ]
        return dict(consumer.end_offsets(parts))
    finally:
        consumer.close()


def written(
    settings: Settings, before: Mapping[TopicPartition, int], after: Mapping[TopicPartition, int]
) -> Wire:
    """The records between ``before`` and ``after``, read back from the broker."""
    wire = Wire()
    todo = {tp: (before[tp], end) for tp, end in after.items() if end > before[tp]}
    if not todo:
        return wire
    consumer = KafkaConsumer(**kafka_config(settings, "bench-copies-wire"))
    try:
        consumer.assign(list(todo))
        for tp, (start, _) in todo.items():
            consumer.seek(tp, start)
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < end for tp, (_, end) in todo.items()):
            if time.monotonic() > deadline:
                raise RuntimeError("copies: the verification's records could not be read back")
            for tp, records in consumer.poll(timeout_ms=500).items():
                for r in records:
                    if r.offset >= todo[tp][1]:
                        continue
                    size = len(r.key or b"") + len(r.value or b"")
                    size += sum(len(k.encode()) + len(v or b"") for k, v in r.headers or ())
                    kind = kind_of(r.headers) or f"other ({tp.topic})"
                    wire.headers.setdefault(kind, set()).update(k for k, _ in r.headers or ())
                    n, b = wire.by_kind.get(kind, (0, 0))
                    wire.by_kind[kind] = (n + 1, b + size)
                    wire.records += 1
                    wire.bytes += size
    finally:
        consumer.close()
    return wire


def topic_records(settings: Settings, topic: str) -> int:
    """How many records ``topic`` holds (partition 0): what a mend reads from its start."""
    consumer = KafkaConsumer(**kafka_config(settings, "bench-copies-wire"))
    try:
        tp = TopicPartition(topic, 0)
        return int(consumer.end_offsets([tp])[tp] - consumer.beginning_offsets([tp])[tp])
    finally:
        consumer.close()
