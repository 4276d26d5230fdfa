"""Offsets committed only for work that is done, without waiting for it in the poll loop.

After a batch is written, its acknowledgements are on their way to the broker. Waiting for
them and then committing, batch after batch, would make every poll pay two round trips; a
host of 196 countries then falls behind. The committer keeps each batch's offsets with the
futures of what it said, and commits them, in order, once every one of those futures has
succeeded. Nothing is committed past a batch whose acknowledgements are not confirmed.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from notice_bus.errors import BrokerUnavailable
from notice_bus.runtime.kafka import explain

log = logging.getLogger("notice_bus.adapter")


@dataclass
class _Done:
    said: Sequence[Any]  # futures of acknowledgements and dead letters
    offsets: dict[TopicPartition, int]  # next offset to read, per partition
    first: dict[TopicPartition, int]  # first offset of the batch, to read it again
    then: Callable[[], None]  # what to count once committed


class Committer:
    """Commits the offsets of finished batches once the broker has what they said."""

    def __init__(self, consumer: Any, producer: Any | None) -> None:
        """``producer`` sends what the batches say; None if they say nothing."""
        self._consumer = consumer
        self._producer = producer
        self._waiting: deque[_Done] = deque()
        # Committed asynchronously and not yet made sure of: an adapter closing right after
        # an asynchronous commit would otherwise leave without it (kafka-python drops it).
        self._unsure: dict[TopicPartition, OffsetAndMetadata] = {}

    def add(self, records: Sequence[Any], said: Sequence[Any], then: Callable[[], None]) -> None:
        offsets: dict[TopicPartition, int] = {}
        first: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            first.setdefault(tp, r.offset)
            offsets[tp] = r.offset + 1  # later records of a partition overwrite earlier ones
        self._waiting.append(_Done(list(said), offsets, first, then))

    def settle(self, *, wait: bool) -> None:
        """Commit every batch, oldest first, whose acknowledgements are confirmed; with
        ``wait``, first wait for all of them. Raises BrokerUnavailable if one failed."""
        if wait and self._waiting and self._producer is not None:
            try:
                self._producer.flush(timeout=30)
            except KafkaError as exc:
                raise BrokerUnavailable(f"acknowledgements not confirmed: {explain(exc)}") from exc
        done: list[_Done] = []
        while self._waiting:
            head = self._waiting[0]
            if not wait and not all(f.is_done for f in head.said):
                break
            try:
                for f in head.said:
                    f.get(timeout=30)
            except KafkaError as exc:
                raise BrokerUnavailable(f"acknowledgements not confirmed: {explain(exc)}") from exc
            done.append(self._waiting.popleft())
        if not done:
            if wait and self._unsure:
                self._commit({}, wait=True)
            return
        offsets = {tp: off for d in done for tp, off in d.offsets.items()}
        self._commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()}, wait)
        for d in done:
            d.then()

    def commit_confirmed(self, wait_s: float) -> None:
        """Commit, asynchronously, every batch, oldest first, whose acknowledgements the
        broker confirms within ``wait_s``, and forget the rest: what the adapter does when its
        partitions are revoked. The commit request goes out before the group's next join, so
        the partitions' next owner starts after the finished work instead of writing and
        acknowledging it again. (The producer's own thread confirms the acknowledgements, so
        waiting for them here does not stall it.)"""
        deadline = time.monotonic() + wait_s
        done: list[_Done] = []
        try:
            while self._waiting:
                for f in self._waiting[0].said:
                    f.get(timeout=max(0.0, deadline - time.monotonic()))
                done.append(self._waiting.popleft())
        except KafkaError as exc:  # not confirmed in time: read again by the next owner
            log.warning("%d batches not confirmed before a rebalance: %s", len(self._waiting), exc)
        offsets = {tp: off for d in done for tp, off in d.offsets.items()}
        self.forget()
        if offsets:
            try:
                self._consumer.commit_async(
                    {tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()},
                    callback=_log_failure,
                )
            except KafkaError as exc:  # read again by the next owner: harmless
                log.warning("commit before a rebalance failed: %s", exc)
        for d in done:
            d.then()

    def forget(self) -> dict[TopicPartition, int]:
        """Drop every waiting batch; returns where to read them again from."""
        first: dict[TopicPartition, int] = {}
        for d in self._waiting:
            for tp, off in d.first.items():
                first.setdefault(tp, off)
        self._waiting.clear()
        self._unsure = {}
        return first

    def _commit(self, offsets: dict[TopicPartition, OffsetAndMetadata], wait: bool) -> None:
        try:
            if wait:
                self._consumer.commit({**self._unsure, **offsets})
                self._unsure = {}
            else:
                self._unsure.update(offsets)
                # Requests to the coordinator are answered in order, so a later commit never
                # lands before an earlier one.
                self._consumer.commit_async(offsets, callback=_log_failure)
        except CommitFailedError as exc:
            # The partitions moved to another member, which will read them again; writes and
            # acknowledgements are idempotent, so nothing is lost and nothing doubles.
            self._unsure = {}
            log.warning("commit refused after a rebalance: %s", exc)
        except KafkaError as exc:
            raise BrokerUnavailable(f"commit failed: {explain(exc)}") from exc


def _log_failure(offsets: Any, result: Any) -> None:
    if isinstance(result, Exception):
        # Not lost: the next commit covers these offsets, or the batches are read again.
        log.warning("asynchronous commit failed: %s", result)
