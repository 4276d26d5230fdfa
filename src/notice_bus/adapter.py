"""A national bureau's adapter: one country's notices topic into its local information system.

Each poll runs the same single-purpose steps, in order:

1. **decode** the Avro message (any schema version the schema store knows);
2. **validate** it against the notice rules and check it is addressed to this country;
3. **write** the valid ones through the :class:`~notice_bus.sink.Sink`;
4. **acknowledge**: RECEIVED and RECORDED to the country's acks topic; invalid records go to the
   dead-letter topic with their reason and a REJECTED acknowledgement;
5. **commit** the offsets, only once every record of the batch is written or dead-lettered and
   every acknowledgement is confirmed by the broker.

When the local system is unavailable, a few quick retries absorb a blip; past them the adapter
*holds* the batch: it pauses its partitions, keeps polling (so the group sees a live member and
does not rebalance), probes the system's health with backoff, and finishes the batch when the
system answers again. When the broker fails us, the batch is read again from the committed
offsets; writes are idempotent and the tracker deduplicates acknowledgements, so a replay is
harmless.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from notice_bus.acknowledger import Acknowledger
from notice_bus.bureau_channel import BureauChannel
from notice_bus.codec import AvroCodec, SchemaStore, load_schema
from notice_bus.errors import (
    BrokerUnavailable,
    ConfigError,
    InvalidMessage,
    InvalidNotice,
    LocalSystemRejected,
    LocalSystemUnavailable,
    SchemaError,
    TransientError,
)
from notice_bus.metrics import AdapterMetrics
from notice_bus.model import AckStatus, NoticeEvent, utcnow
from notice_bus.retry import retrying
from notice_bus.schema_registry import KafkaSchemaStore
from notice_bus.settings import Settings
from notice_bus.sink import Sink
from notice_bus.topics import TopicNames, kafka_config
from notice_bus.validation import validate_event

log = logging.getLogger("notice_bus.adapter")

Clock = Callable[[], datetime]


def group_id(settings: Settings, country: str) -> str:
    return f"{settings.topic_prefix}notice-bus.{country}"


@dataclass
class _Batch:
    """Records polled together, the events taken from them, and what was said so far."""

    records: list[Any]
    taken: list[tuple[Any, NoticeEvent]] = field(default_factory=list)  # valid ones
    recorded: list[tuple[Any, NoticeEvent]] = field(default_factory=list)  # written
    refused: set[tuple[int, int]] = field(default_factory=set)  # (partition, offset)
    said: list[Any] = field(default_factory=list)  # futures of acks and dead letters
    rejected: int = 0
    attempts: int = 0
    next_try: float = 0.0


class Adapter:
    """Consumes ``country``'s notices as a member of the country's consumer group.

    ``from_beginning`` re-reads the whole (compacted) topic once, for a bureau rebuilding its
    local copy: the latest version of every notice is there. ``instance_id`` makes the member
    static: a restarted instance with the same id takes its partitions back at once, without
    waiting for the session to time out or rebalancing the others.
    """

    def __init__(
        self,
        settings: Settings,
        country: str,
        sink: Sink,
        *,
        clock: Clock = utcnow,
        adapter_id: str | None = None,
        schemas: SchemaStore | None = None,
        from_beginning: bool = False,
        instance_id: str | None = None,
        metrics: AdapterMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.country = country
        self.sink = sink
        self.adapter_id = adapter_id or f"{country}@{socket.gethostname()}:{os.getpid()}"
        self._names = TopicNames(settings.topic_prefix)
        store = schemas if schemas is not None else KafkaSchemaStore(settings)
        self._events = AvroCodec(load_schema("notice_event"), store)
        self._retry = retrying(settings)
        self._held: _Batch | None = None
        self._closed = False
        self._rewind_on_assign = from_beginning
        config = kafka_config(settings, f"notice-bus-adapter-{country}")
        try:
            self._consumer = KafkaConsumer(
                **config,
                group_id=group_id(settings, country),
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
                max_poll_records=settings.batch_size,
                session_timeout_ms=settings.session_timeout_ms,
                heartbeat_interval_ms=max(1000, settings.session_timeout_ms // 4),
                group_instance_id=instance_id,
                metadata_max_age_ms=30000,  # notice added partitions within half a minute
            )
            producer = KafkaProducer(**config, linger_ms=5)
        except KafkaError as exc:
            raise BrokerUnavailable(
                f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}"
            ) from exc
        acks = AvroCodec(load_schema("ack"), store)
        self._producer = producer
        self._say = Acknowledger(producer, self._names, country, self.adapter_id, acks, clock)
        self._channel = BureauChannel(producer, self._names, country, store)
        self.metrics = metrics or AdapterMetrics()
        topic = self._names.notices(country)
        # Knowing the topic's partitions before joining lets this member, if it leads the
        # group, assign them at once; it is also where a missing topic is noticed.
        if not self._consumer.partitions_for_topic(topic):
            self.close()
            raise ConfigError(
                f"topic {topic} does not exist at {settings.bootstrap_servers}; run"
                f" `notice-bus topics init --countries {country}` first"
            )
        self._topic = topic
        self._consumer.partitions_for_topic(self._channel.reminders_topic)  # same reason
        self._consumer.subscribe([topic, self._channel.reminders_topic], listener=_Rebalance(self))

    # --- running ----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Process batches until ``stop`` is set, then finish the batch in hand and leave."""
        log.info("adapter %s consuming %s", self.adapter_id, self._names.notices(self.country))
        try:
            while not stop.is_set():
                self.step()
            if self._held is not None:
                log.warning("%s: leaving with a held batch; it will be read again", self.country)
        finally:
            self.close()

    def step(self) -> int:
        """Poll once and process what came; returns the number of records finished."""
        if self._held is not None:
            return self._step_held()
        self._channel.relay_responses(self.sink)
        # Until the group has given us partitions, poll long: kafka-python drives the join's
        # round trips only inside poll, and short polls on a busy machine can starve it.
        wait_ms = self.settings.poll_timeout_ms if self._consumer.assignment() else 2000
        polled = self._consumer.poll(timeout_ms=wait_ms)
        batch = _Batch([r for part in polled.values() for r in part])
        if not batch.records:
            return 0
        try:
            self._take_in(batch)
            self._write(batch)
            self._finish(batch)
        except LocalSystemUnavailable as exc:
            self._hold(batch, exc)
            return 0
        except TransientError as exc:
            self._abandon(batch, exc)
            return 0
        return len(batch.records)

    @property
    def holding(self) -> bool:
        """Whether a batch waits for the local system to come back."""
        return self._held is not None

    def close(self) -> None:
        """Leave the consumer group and release connections. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._producer.flush(timeout=10)
        finally:
            self._producer.close(timeout=10)
            self._consumer.close()
            self.sink.close()

    # --- the pipeline -----------------------------------------------------------------------

    def _take_in(self, batch: _Batch) -> None:
        """Decode and validate every record; buffer the good ones, dead-letter the rest."""
        for record in batch.records:
            if record.topic != self._topic:
                self._channel.surface(self.sink, record)
                continue
            try:
                event = self._decode(record)
                self._validate(record, event)
            except InvalidMessage as exc:
                batch.said += self._say.reject(record, exc, _peek_version(self._events, record))
                batch.rejected += 1
                continue
            batch.said.append(self._say.ack(event, AckStatus.RECEIVED, record))
            batch.taken.append((record, event))

    def _write(self, batch: _Batch) -> None:
        """Write every valid event of the batch (again, if this is a retry: writes are
        idempotent). If the local system refuses the batch for good, find out which notices
        it refuses, one by one, and dead-letter those. Raises LocalSystemUnavailable."""
        partitions = {r.partition for r in batch.records}
        self.sink.discard(partitions)
        for record, event in batch.taken:
            self.sink.add(event, record.partition)
        try:
            self._flush()
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
                self._flush()
            except LocalSystemRejected as refused:
                batch.refused.add((record.partition, record.offset))
                why = self._invalid(record, f"local system refused it: {refused}")
                batch.said += self._say.reject(record, why, event.version)
                batch.rejected += 1
                continue
            batch.recorded.append((record, event))

    def _flush(self) -> None:
        for attempt in self._retry:
            with attempt:
                self.sink.flush()

    def _finish(self, batch: _Batch) -> None:
        """After the write: RECORDED acks, wait for the broker, commit."""
        batch.said += [self._say.ack(e, AckStatus.RECORDED, r) for r, e in batch.recorded]
        self._say.confirm(batch.said)
        self._commit(batch.records)
        self.metrics.finished(self.country, len(batch.recorded), batch.rejected)

    def _decode(self, record: Any) -> NoticeEvent:
        if record.value is None:
            raise self._invalid(record, "empty record")
        try:
            return NoticeEvent.from_avro(self._events.decode(record.value))
        except SchemaError as exc:
            raise self._invalid(record, str(exc)) from exc
        except (KeyError, ValueError, TypeError) as exc:
            raise self._invalid(record, f"fields do not form a notice event: {exc!r}") from exc

    def _validate(self, record: Any, event: NoticeEvent) -> None:
        try:
            validate_event(event)
        except InvalidNotice as exc:
            raise self._invalid(record, str(exc)) from exc
        if _key(record) != event.notice_id:
            raise self._invalid(record, f"key {_key(record)!r} is not notice {event.notice_id}")
        if not event.targets(self.country):
            reason = f"notice {event.notice_id} is not addressed to {self.country}"
            raise self._invalid(record, reason)

    def _invalid(self, record: Any, reason: str) -> InvalidMessage:
        return InvalidMessage(
            reason,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=_key(record),
        )

    def _commit(self, records: Sequence[Any]) -> None:
        offsets = {
            TopicPartition(r.topic, r.partition): OffsetAndMetadata(r.offset + 1, "", -1)
            for r in records  # later records of a partition overwrite earlier ones
        }
        try:
            self._consumer.commit(offsets)
        except CommitFailedError as exc:
            # The partitions moved to another member, which will read them again; writes and
            # acknowledgements are idempotent, so nothing is lost and nothing doubles.
            log.warning("%s: commit refused after a rebalance: %s", self.country, exc)
        except KafkaError as exc:
            raise BrokerUnavailable(f"commit failed: {exc}") from exc

    # --- outages ----------------------------------------------------------------------------

    def _hold(self, batch: _Batch, exc: Exception) -> None:
        log.error(
            "%s: local system unavailable, holding %d records: %s",
            self.country,
            len(batch.records),
            exc,
        )
        self._consumer.pause(*self._consumer.assignment())
        self.metrics.errors.labels(self.country, "local_system_unavailable").inc()
        self.metrics.holding.labels(self.country).set(1)
        batch.next_try = time.monotonic() + self._backoff(batch.attempts)
        self._held = batch

    def _step_held(self) -> int:
        # Polling paused partitions returns nothing but keeps this member in the group.
        self._consumer.poll(timeout_ms=self.settings.poll_timeout_ms)
        batch = self._held
        if batch is None or time.monotonic() < batch.next_try:
            return 0  # dropped by a rebalance, or not yet time
        batch.attempts += 1
        health = self.sink.health()
        try:
            if not health.ok:
                raise LocalSystemUnavailable(health.detail or "health check failed")
            self._write(batch)
            self._finish(batch)
        except LocalSystemUnavailable as exc:
            batch.next_try = time.monotonic() + self._backoff(batch.attempts)
            log.warning("%s: still unavailable (attempt %d): %s", self.country, batch.attempts, exc)
            return 0
        except TransientError as exc:
            self._held = None
            self._consumer.resume(*self._consumer.assignment())
            self._abandon(batch, exc)
            return 0
        log.info("%s: local system back after %d attempts", self.country, batch.attempts)
        self.metrics.holding.labels(self.country).set(0)
        self._held = None
        self._consumer.resume(*self._consumer.assignment())
        return len(batch.records)

    def _backoff(self, attempts: int) -> float:
        return float(min(self.settings.retry_max_s, self.settings.retry_initial_s * 2**attempts))

    def _abandon(self, batch: _Batch, exc: Exception) -> None:
        """Read the batch again from its first offsets."""
        self.metrics.errors.labels(self.country, "broker_unavailable").inc()
        log.error("%s: batch not done, it will be read again: %s", self.country, exc)
        first: dict[TopicPartition, int] = {}
        for r in batch.records:
            first.setdefault(TopicPartition(r.topic, r.partition), r.offset)
        self.sink.discard(tp.partition for tp in first)
        assigned = self._consumer.assignment()
        for tp, offset in first.items():
            if tp in assigned:
                self._consumer.seek(tp, offset)

    def _revoked(self, partitions: Sequence[TopicPartition]) -> None:
        if self._held is not None:
            log.warning(
                "%s: partitions revoked while holding a batch; its new owner re-reads it",
                self.country,
            )
            self._held = None
        self.sink.discard(tp.partition for tp in partitions)

    def _assigned(self, partitions: Sequence[TopicPartition]) -> None:
        partitions = [tp for tp in partitions if tp.topic == self._topic]
        if self._rewind_on_assign and partitions:
            log.info("%s: reading %d partitions from the beginning", self.country, len(partitions))
            self._consumer.seek_to_beginning(*partitions)
            self._rewind_on_assign = False


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, adapter: Adapter) -> None:
        self._adapter = adapter

    def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self._adapter._revoked(revoked)

    def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self._adapter._assigned(assigned)


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
