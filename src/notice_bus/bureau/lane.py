"""One country's part of an adapter: its topics, its local system, what it says to HQ.

An :class:`~notice_bus.bureau.adapter.Adapter` has one lane per country it serves. A lane turns the
records of its country's topics into writes and acknowledgements (decode, validate, write,
RECORDED); the adapter around it polls, commits and decides what to do when a lane's local
system is away. Lanes do not share state, so one country's refusals or outage stay its own.

:meth:`Lane.take_in` runs on the polling thread and touches nothing but memory and the
producer; everything that talks to the local system (:meth:`Lane.work`) runs on a writer
thread, so a local system that hangs or is down holds its own lane only.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from notice_bus.bureau.acknowledger import Acknowledger
from notice_bus.bureau.channel import BureauChannel
from notice_bus.bureau.sinks.sink import Sink
from notice_bus.errors import (
    InvalidMessage,
    InvalidNotice,
    LocalSystemRejected,
    LocalSystemUnavailable,
    SchemaError,
)
from notice_bus.trust.ack_mac import AckSigner
from notice_bus.trust.keyring_topic import NoticeChecker
from notice_bus.wire.codec import AvroCodec, SchemaStore, load_schema
from notice_bus.wire.model import NOT_ADDRESSED, AckStatus, Action, NoticeEvent
from notice_bus.wire.topics import TopicNames
from notice_bus.wire.validation import validate_event

log = logging.getLogger("notice_bus.adapter")


@dataclass
class Batch:
    """A lane's records of one poll, the events taken from them, and what was said so far."""

    records: list[Any]
    taken: list[tuple[Any, NoticeEvent]] = field(default_factory=list)  # valid ones
    recorded: list[tuple[Any, NoticeEvent]] = field(default_factory=list)  # written
    refused: set[tuple[int, int]] = field(default_factory=set)  # (partition, offset)
    reminders: list[Any] = field(default_factory=list)  # records of the reminders topic
    said: list[Any] = field(default_factory=list)  # futures of acks and dead letters
    rejected: int = 0
    received_at: datetime | None = None
    attempts: int = 0
    next_try: float = 0.0


class Lane:
    """Decode, validate, write and acknowledge the records of ``country``'s topics.

    ``flush`` writes the sink's buffer with the adapter's retry policy; it raises
    LocalSystemUnavailable when the system stays away, which the adapter handles.
    """

    def __init__(
        self,
        country: str,
        sink: Sink,
        *,
        producer: Any,
        names: TopicNames,
        store: SchemaStore,
        adapter_id: str,
        clock: Callable[[], datetime],
        answers_every_s: float = 1.0,
        answers_first_after_s: float = 0.0,
        checker: NoticeChecker | None = None,
        mac: AckSigner | None = None,
    ) -> None:
        self.country = country
        self._checker = checker
        self.sink = sink
        self._clock = clock
        self.topic = names.notices(country)
        self._events = AvroCodec(load_schema("notice_event"), store)
        acks = AvroCodec(load_schema("ack"), store)
        self.say = Acknowledger(producer, names, country, adapter_id, acks, clock, mac)
        self.channel = BureauChannel(
            producer,
            names,
            country,
            store,
            every_s=answers_every_s,
            first_after_s=answers_first_after_s,
            mac=mac,
        )
        self.held: Batch | None = None  # a batch waiting for the local system

    @property
    def topics(self) -> tuple[str, str]:
        return self.topic, self.channel.reminders_topic

    def take_in(self, batch: Batch) -> None:
        """Decode and validate every record; keep the good ones, dead-letter the rest, and
        set HQ's reminders aside for :meth:`work`. Never touches the local system."""
        batch.received_at = self._clock()
        for record in batch.records:
            if record.topic != self.topic:
                batch.reminders.append(record)
                continue
            try:
                self._verify(record)
                event = self._decode(record)
                event = self._validate(record, event)
            except InvalidMessage as exc:
                batch.said += self.say.reject(record, exc, _peek_version(self._events, record))
                batch.rejected += 1
                continue
            batch.taken.append((record, event))

    def work(self, batch: Batch, flush: Callable[[Sink], None], *, probe: bool = False) -> None:
        """Everything the batch asks of the local system, on a writer thread: with ``probe``
        (a retry after an outage) its health first, then HQ's reminders, then the notices.
        Reminders surfaced once are not surfaced again when the notices' write is retried.
        Raises LocalSystemUnavailable."""
        if probe:
            health = self.sink.health()
            if not health.ok:
                raise LocalSystemUnavailable(health.detail or "health check failed")
        while batch.reminders:
            self.channel.surface(self.sink, batch.reminders[0])
            batch.reminders.pop(0)
        self.write(batch, flush)

    def write(self, batch: Batch, flush: Callable[[Sink], None]) -> None:
        """Write every valid event of the batch (again, if this is a retry: writes are
        idempotent). If the local system refuses the batch for good, find out which notices
        it refuses, one by one, and dead-letter those. Raises LocalSystemUnavailable."""
        partitions = {r.partition for r in batch.records if r.topic == self.topic}
        self.sink.discard(partitions)
        for record, event in batch.taken:
            self.sink.add(event, record.partition)
        try:
            flush(self.sink)
            batch.recorded = list(batch.taken)
            return
        except LocalSystemRejected as exc:
            log.error("%s: local system refused a batch, isolating: %s", self.country, exc)
        batch.recorded = []
        for record, event in batch.taken:
            if (record.partition, record.offset) in batch.refused:
                continue
            self.sink.discard(partitions)  # nothing but this one event in the buffers
            self.sink.add(event, record.partition)
            try:
                flush(self.sink)
            except LocalSystemRejected as refused:
                batch.refused.add((record.partition, record.offset))
                why = self._invalid(record, f"local system refused it: {refused}")
                batch.said += self.say.reject(record, why, event.version)
                batch.rejected += 1
                continue
            batch.recorded.append((record, event))

    def received(self, batch: Batch) -> None:
        """Tell HQ the batch arrived, when its write has to wait for the local system."""
        batch.said += self.say.ack(AckStatus.RECEIVED, batch.taken, at=batch.received_at)

    def recorded(self, batch: Batch) -> None:
        """Acknowledge what the batch wrote: RECORDED, carrying when it was received (so a
        write that did not wait costs one acknowledgement, not two)."""
        batch.said += self.say.ack(
            AckStatus.RECORDED, batch.recorded, received_at=batch.received_at
        )

    def _verify(self, record: Any) -> None:
        """HQ's signature, checked before anything else reads the record: a record without a
        valid one is dead-lettered and never reaches the local system."""
        if self._checker is not None:
            problem = self._checker.problem(record)
            if problem is not None:
                raise self._invalid(record, f"not signed by HQ: {problem}")

    def _decode(self, record: Any) -> NoticeEvent:
        if record.value is None:
            raise self._invalid(record, "empty record")
        try:
            return NoticeEvent.from_avro(self._events.decode(record.value))
        except SchemaError as exc:
            raise self._invalid(record, str(exc)) from exc
        except (KeyError, ValueError, TypeError) as exc:
            raise self._invalid(record, f"fields do not form a notice event: {exc!r}") from exc

    def _validate(self, record: Any, event: NoticeEvent) -> NoticeEvent:
        """The event to take in. A cancel is applied whatever its targets (HQ sends it to
        every country that ever had the notice); an update that no longer addresses this
        country withdraws the local copy, with the reason :data:`NOT_ADDRESSED`; a first
        version not addressed to it was misrouted, and is dead-lettered."""
        try:
            validate_event(event)
        except InvalidNotice as exc:
            raise self._invalid(record, str(exc)) from exc
        if _key(record) != event.notice_id:
            raise self._invalid(record, f"key {_key(record)!r} is not notice {event.notice_id}")
        if event.action is Action.CANCEL or event.targets(self.country):
            return event
        if event.action is Action.PUBLISH:  # a first version sent here by mistake
            reason = f"notice {event.notice_id} is not addressed to {self.country}"
            raise self._invalid(record, reason)
        return dataclasses.replace(event, action=Action.CANCEL, person=None, reason=NOT_ADDRESSED)

    def _invalid(self, record: Any, reason: str) -> InvalidMessage:
        return InvalidMessage(
            reason,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=_key(record),
        )


def _key(record: Any) -> str | None:
    try:
        return record.key.decode() if record.key is not None else None
    except UnicodeDecodeError:
        return None


def _peek_version(codec: AvroCodec, record: Any) -> int:
    """The version of a rejected record, if it decodes at all; 0 otherwise."""
    try:
        version = codec.decode(record.value or b"").get("version", 0)
    except SchemaError:
        return 0
    return version if isinstance(version, int) else 0


def make_lanes(
    sinks: Mapping[str, Sink],
    producer: Any,
    names: TopicNames,
    store: SchemaStore,
    adapter_id: str,
    clock: Callable[[], datetime],
    checker: NoticeChecker | None = None,
    macs: Mapping[str, AckSigner | None] | None = None,
) -> dict[str, Lane]:
    """A lane per country of ``sinks``, by each of its topics (notices and reminders);
    ``checker`` checks HQ's signatures, ``macs`` tag each country's acknowledgements."""
    lanes: dict[str, Lane] = {}
    # Answers are due in hours; a hub of many countries looks for them less often than once a
    # second each (a query per country per second): 196 countries look every 20 s, ten queries
    # a second, spread out rather than all at once.
    every_s = max(1.0, len(sinks) / 10)
    for i, (country, sink) in enumerate(sinks.items()):
        lane = Lane(
            country,
            sink,
            producer=producer,
            names=names,
            store=store,
            adapter_id=adapter_id,
            clock=clock,
            answers_every_s=every_s,
            answers_first_after_s=every_s * i / len(sinks),
            checker=checker,
            mac=(macs or {}).get(country),
        )
        lanes.update(dict.fromkeys(lane.topics, lane))
    return lanes
