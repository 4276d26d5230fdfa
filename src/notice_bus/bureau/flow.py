"""Which records the adapter's consumer hands each lane, and when.

A lane takes one batch at a time. While it writes one, or holds one for a local system that
is away, its partitions are paused, so the other countries go on and the group sees a live
member; records the consumer handed it meanwhile (a rebalance resumes every partition) are
put back: the consumer seeks to the first of them, and reads them again once the lane can
take them. Nothing is skipped, since positions only ever move back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from kafka import TopicPartition

from notice_bus.bureau.lane import Batch, Lane
from notice_bus.bureau.metrics import AdapterMetrics
from notice_bus.runtime.settings import Settings

log = logging.getLogger("notice_bus.adapter")


class Flow:
    """Pauses, resumes and rewinds a consumer's partitions lane by lane."""

    def __init__(self, consumer: Any, settings: Settings, metrics: AdapterMetrics) -> None:
        self._consumer = consumer
        self._settings = settings
        self._metrics = metrics
        self._paused: set[str] = set()  # countries this flow paused and has not resumed

    def partitions(self, lane: Lane) -> list[TopicPartition]:
        """The lane's partitions this consumer is assigned now."""
        return [tp for tp in self._consumer.assignment() if tp.topic in lane.topics]

    def resume(self, lane: Lane) -> None:
        # Most batches end with nothing paused: no scan of the whole assignment for them.
        if lane.country in self._paused:
            self._paused.discard(lane.country)
            self._consumer.resume(*self.partitions(lane))

    def pause(self, lane: Lane) -> None:
        self._paused.add(lane.country)
        self._consumer.pause(*self.partitions(lane))

    def put_back(self, lane: Lane, records: Sequence[Any]) -> None:
        """Read ``records`` again later, and pause the lane until it can take them."""
        first: dict[TopicPartition, int] = {}
        for r in records:
            first.setdefault(TopicPartition(r.topic, r.partition), r.offset)
        self.rewind(first)
        self.pause(lane)

    def rewind(self, first: Mapping[TopicPartition, int]) -> None:
        """Seek each partition still assigned to its offset."""
        assigned = self._consumer.assignment()
        for tp, offset in first.items():
            if tp in assigned:
                self._consumer.seek(tp, offset)

    def hold(self, lane: Lane, batch: Batch, exc: Exception) -> None:
        """Keep ``batch`` until the local system answers again; only this lane waits. The
        first time, HQ is told the batch was RECEIVED; every time, the next try is set back."""
        mine = {TopicPartition(r.topic, r.partition) for r in batch.records}
        if not mine & self._consumer.assignment():
            log.warning("%s: a held batch's partitions moved away; their owner reads it", lane)
            if lane.held is batch:
                self.release(lane)
            return
        if lane.held is not batch:
            log.error(
                "%s: local system unavailable, holding %d records: %s",
                lane.country,
                len(batch.records),
                exc,
            )
            lane.received(batch)
            self._metrics.errors.labels(lane.country, "local_system_unavailable").inc()
            self._metrics.holding.labels(lane.country).set(1)
            lane.held = batch
        else:
            log.warning("%s: still unavailable (attempt %d): %s", lane.country, batch.attempts, exc)
        self.pause(lane)
        batch.next_try = time.monotonic() + self._backoff(batch.attempts)

    def release(self, lane: Lane) -> None:
        """The lane's held batch is done, or gone with its partitions."""
        lane.held = None
        self._metrics.holding.labels(lane.country).set(0)

    def _backoff(self, attempts: int) -> float:
        s = self._settings
        return float(min(s.retry_max_s, s.retry_initial_s * 2**attempts))
