"""A country's dead-letter topic: what its adapter parked, and bringing it back.

An adapter parks each record it can never process in ``dlq.CC`` with the original key and
value bytes and the headers ``reason``, ``source.topic``, ``source.partition``,
``source.offset`` and ``adapter`` (see :meth:`~notice_bus.bureau.acknowledger.Acknowledger.reject`).
Once the cause is fixed (a local constraint that was wrong, a schema registered late),
:func:`replay` runs the parked records through the adapter's own pipeline for that country
(:class:`~notice_bus.bureau.lane.Lane`): decode, validate, write, acknowledge.

Progress is the committed offset of the replay consumer group, :func:`replay_group`: a record
below it has been replayed (and possibly parked again at the end of the topic), a record at or
after it waits for the next replay. Run one replay of a country at a time: two would both
replay the same records (harmless to the local system, whose writes are idempotent and ordered
by version, but each record still refused would be parked twice).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from notice_bus.bureau.lane import Batch, Lane
from notice_bus.bureau.sinks.sink import Sink
from notice_bus.errors import BrokerUnavailable, ConfigError, LocalSystemUnavailable
from notice_bus.runtime.kafka import connecting, explain, kafka_config, unreachable
from notice_bus.runtime.settings import Settings
from notice_bus.wire.model import utcnow
from notice_bus.wire.schema_registry import KafkaSchemaStore
from notice_bus.wire.topics import TopicNames

#: Headers the adapter adds when it parks a record; the rest are the original's.
PARKING_HEADERS = frozenset(
    {"reason", "source.topic", "source.partition", "source.offset", "adapter"}
)
_STALL_S = 30.0  # no progress reading the topic for this long: the broker is away
Offsets = dict[TopicPartition, int]


def replay_group(settings: Settings, country: str) -> str:
    """The consumer group whose committed offset on ``dlq.CC`` marks what was replayed."""
    return f"{settings.topic_prefix}notice-bus.dlq.{country}"


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """A parked record as the adapter first read it from the notices topic: its original
    position, key, value and headers, so that acknowledgements and a second parking name
    that position (the tracker counts one REJECTED per source position). ``timestamp`` is
    when it was parked (ms): the original time is not kept."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp: int


@dataclass(frozen=True, slots=True)
class Parked:
    """One record of ``dlq.CC``.

    ``replayed``: its offset is below the replay group's committed offset. ``source`` is the
    original record, or None when the headers name no position; ``unreplayable`` says why a
    replay passes over it (it stays parked), None when it can be replayed.
    """

    partition: int
    offset: int
    timestamp: int
    key: str
    reason: str
    adapter: str
    source: SourceRecord | None
    unreplayable: str | None
    replayed: bool

    @property
    def broker_at(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp / 1000, UTC)

    @property
    def where(self) -> str:
        """``notices.FR[0]@41``: where the adapter read it."""
        s = self.source
        return f"{s.topic}[{s.partition}]@{s.offset}" if s is not None else "?"

    @property
    def state(self) -> str:
        """``waiting``, ``replayed``, ``skipped`` (passed over: it cannot be replayed) or
        ``unreplayable`` (a replay will pass over it)."""
        if self.unreplayable is None:
            return "replayed" if self.replayed else "waiting"
        return "skipped" if self.replayed else "unreplayable"


@dataclass
class ReplayResult:
    """What one :func:`replay` did. ``replayed`` records went through the pipeline:
    ``recorded`` of them were written, ``parked_again`` (each with its reason) went back to
    the end of the topic; ``skipped`` ones cannot be replayed and stay where they are."""

    topic: str
    replayed: int = 0
    recorded: int = 0
    parked_again: list[Parked] = field(default_factory=list)
    skipped: list[Parked] = field(default_factory=list)


class DeadLetters:
    """``dlq.CC`` read through the replay group's consumer, partitions assigned by hand (the
    group is only a place for the committed offsets: nothing joins it)."""

    def __init__(self, settings: Settings, country: str) -> None:
        names = TopicNames(settings.topic_prefix)
        self.country = country
        self.topic = names.dead_letters(country)
        self.notices_topic = names.notices(country)
        connecting(settings)
        try:
            self._consumer = KafkaConsumer(
                **kafka_config(settings, f"notice-bus-dlq-{country}"),
                group_id=replay_group(settings, country),
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=settings.batch_size,
            )
        except KafkaError as exc:
            raise unreachable(settings, exc) from exc
        try:
            if self.topic not in self._consumer.topics():
                raise ConfigError(
                    f"topic {self.topic} does not exist at {settings.bootstrap_servers}:"
                    f" {country} is not a registered country (`notice-bus topics init`)"
                )
            partitions = self._consumer.partitions_for_topic(self.topic) or set()
            self.partitions = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        except KafkaError as exc:
            self.close()
            raise BrokerUnavailable(f"cannot read {self.topic}: {explain(exc)}") from exc
        except ConfigError:
            self.close()
            raise

    def bounds(self) -> tuple[Offsets, Offsets, Offsets]:
        """(the first offsets; where a replay resumes: the committed offset, else the first;
        the end offsets now)."""
        try:
            first = self._consumer.beginning_offsets(self.partitions)
            end = self._consumer.end_offsets(self.partitions)
            committed = {tp: self._consumer.committed(tp) for tp in self.partitions}
        except KafkaError as exc:
            raise BrokerUnavailable(
                f"cannot read the offsets of {self.topic}: {explain(exc)}"
            ) from exc
        resume = {tp: max(first[tp], committed[tp] or 0) for tp in self.partitions}
        return first, resume, end

    def read(self, start: Offsets, end: Offsets) -> Iterator[list[Any]]:
        """The records from ``start`` up to (not including) ``end``, a poll's worth at a time,
        in offset order within each partition."""
        todo = [tp for tp in self.partitions if start.get(tp, 0) < end.get(tp, 0)]
        try:
            self._consumer.assign(todo)  # only these are fetched
            for tp in todo:
                self._consumer.seek(tp, start[tp])
            progress = time.monotonic()
            while todo:
                polled = self._consumer.poll(timeout_ms=1000)
                chunk = [r for rs in polled.values() for r in rs if r.offset < end.get(_tp(r), 0)]
                todo = [tp for tp in todo if self._consumer.position(tp) < end[tp]]
                if chunk:
                    progress = time.monotonic()
                    yield chunk
                elif todo and time.monotonic() - progress > _STALL_S:
                    raise BrokerUnavailable(f"{self.topic}: no records for {_STALL_S:.0f} s")
        except KafkaError as exc:
            raise BrokerUnavailable(f"cannot read {self.topic}: {explain(exc)}") from exc

    def parked(self, record: Any, resume: Offsets) -> Parked:
        """``record`` of the topic as a :class:`Parked`, replayed if below ``resume``."""
        headers = {k: v.decode(errors="replace") for k, v in record.headers or ()}
        source, why = _source(record, headers)
        if source is not None and source.topic != self.notices_topic:
            why = f"it came from {source.topic}, not {self.notices_topic}"
        return Parked(
            partition=record.partition,
            offset=record.offset,
            timestamp=record.timestamp,
            key=record.key.decode(errors="replace") if record.key is not None else "",
            reason=headers.get("reason", ""),
            adapter=headers.get("adapter", ""),
            source=source,
            unreplayable=why,
            replayed=record.offset < resume.get(_tp(record), 0),
        )

    def commit(self, offsets: Offsets) -> None:
        """Mark every record below ``offsets`` replayed."""
        try:
            self._consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
        except KafkaError as exc:
            raise BrokerUnavailable(
                f"cannot commit the replay of {self.topic}: {explain(exc)}"
            ) from exc

    def close(self) -> None:
        self._consumer.close()


def list_parked(settings: Settings, country: str) -> list[Parked]:
    """Every record of ``dlq.CC``, oldest first (the topic has one partition; with several,
    partition by partition). Raises ConfigError when the country has no dead-letter topic."""
    letters = DeadLetters(settings, country)
    try:
        first, resume, end = letters.bounds()
        return [letters.parked(r, resume) for chunk in letters.read(first, end) for r in chunk]
    finally:
        letters.close()


def replay(
    settings: Settings,
    country: str,
    sink: Sink,
    *,
    adapter_id: str | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> ReplayResult:
    """Run the records parked in ``dlq.CC`` since the last replay through ``country``'s
    pipeline into ``sink`` (left open: it is the caller's).

    Takes the records from the replay group's committed offset up to the topic's end as it is
    now, so records parked again by this run (at the end of the topic) wait for the next one.
    Each poll's worth is one batch: decoded and validated (still invalid: parked again with
    its reason and a REJECTED acknowledgement), written, acknowledged RECORDED; once the broker
    has every acknowledgement and dead letter, the group's offset moves past the batch.
    Records that cannot be replayed (not from the country's notices topic, no source position)
    are passed over and stay parked. Raises LocalSystemUnavailable when the local system is
    away (nothing is committed for the batch in hand; records before it stay replayed),
    BrokerUnavailable when the broker is, ConfigError for an unknown country.
    """
    health = sink.health()
    if not health.ok:  # before anything is parked again, which a retry would repeat
        raise LocalSystemUnavailable(f"{country}: local system unavailable: {health.detail}")
    letters = DeadLetters(settings, country)
    result = ReplayResult(letters.topic)
    producer: Any = None
    try:
        _, start, end = letters.bounds()
        if all(start[tp] >= end[tp] for tp in letters.partitions):
            return result
        config = kafka_config(settings, f"notice-bus-dlq-{country}", producer=True)
        try:
            producer = KafkaProducer(**config, linger_ms=5)
        except KafkaError as exc:
            raise unreachable(settings, exc) from exc
        lane = Lane(
            country,
            sink,
            producer=producer,
            names=TopicNames(settings.topic_prefix),
            store=KafkaSchemaStore(settings),
            adapter_id=adapter_id or f"dlq-replay-{country}@{socket.gethostname()}:{os.getpid()}",
            clock=clock,
        )
        again: dict[TopicPartition, list[int]] = {}  # offsets of what this run parked again
        for chunk in letters.read(start, end):
            parked = [letters.parked(r, start) for r in chunk]
            result.skipped += [p for p in parked if p.unreplayable is not None]
            originals = [p.source for p in parked if p.unreplayable is None and p.source]
            if originals:
                batch = Batch(list(originals))
                lane.take_in(batch)
                try:
                    lane.write(batch, lambda sink: sink.flush())
                except LocalSystemUnavailable as exc:
                    raise LocalSystemUnavailable(
                        f"{country}: local system unavailable after {result.replayed} records"
                        f" replayed; the rest stays parked: {explain(exc)}"
                    ) from exc
                lane.recorded(batch)
                for meta in _confirmed(producer, batch.said):
                    if meta.topic == letters.topic:
                        again.setdefault(meta.topic_partition, []).append(meta.offset)
                result.replayed += len(originals)
                result.recorded += len(batch.recorded)
            letters.commit({_tp(r): r.offset + 1 for r in chunk})  # later offsets overwrite
        result.parked_again = _read_back(letters, again)
        return result
    finally:
        if producer is not None:
            producer.close(timeout=10)  # sends what a failed batch said, too
        letters.close()


def _confirmed(producer: Any, futures: Sequence[Any]) -> list[Any]:
    """Wait until the broker has every send of a batch; their record metadata."""
    try:
        producer.flush(timeout=30)
        return [f.get(timeout=30) for f in futures]
    except KafkaError as exc:
        raise BrokerUnavailable(f"acknowledgements not confirmed: {explain(exc)}") from exc


def _read_back(letters: DeadLetters, offsets: dict[TopicPartition, list[int]]) -> list[Parked]:
    """The records this run parked again, read back for their reasons (one read per run)."""
    wanted = {(tp, o) for tp, some in offsets.items() for o in some}
    start = {tp: min(some) for tp, some in offsets.items()}
    end = {tp: max(some) + 1 for tp, some in offsets.items()}
    return [
        letters.parked(r, {})
        for chunk in letters.read(start, end)
        for r in chunk
        if (_tp(r), r.offset) in wanted
    ]


def _source(record: Any, headers: dict[str, str]) -> tuple[SourceRecord | None, str | None]:
    try:
        topic = headers["source.topic"]
        partition, offset = int(headers["source.partition"]), int(headers["source.offset"])
    except (KeyError, ValueError):
        return None, "its headers name no source position"
    original = tuple((k, v) for k, v in record.headers or () if k not in PARKING_HEADERS)
    return SourceRecord(
        topic, partition, offset, record.key, record.value, original, record.timestamp
    ), None


def _tp(record: Any) -> TopicPartition:
    return TopicPartition(record.topic, record.partition)
