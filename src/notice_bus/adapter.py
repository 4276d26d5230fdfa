"""A national bureau's adapter: one country's notices topic into its local information system.

Each poll runs the same single-purpose steps, in order:

1. **decode** the Avro message (any schema version the schema store knows);
2. **validate** it against the notice rules and check it is addressed to this country;
3. **write** the valid ones through the :class:`~notice_bus.sink.Sink` (retried while the local
   system is unavailable);
4. **acknowledge**: RECEIVED and RECORDED to the country's acks topic; invalid records go to the
   dead-letter topic with their reason and a REJECTED acknowledgement;
5. **commit** the offsets, only once every record of the batch is written or dead-lettered and
   every acknowledgement is confirmed by the broker.

If a step fails for a passing reason, the batch is read again from the committed offsets: the
writes are idempotent and the tracker deduplicates acknowledgements, so a replay is harmless.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from notice_bus.codec import AvroCodec, SchemaStore, load_schema
from notice_bus.errors import (
    BrokerUnavailable,
    InvalidMessage,
    InvalidNotice,
    SchemaError,
    TransientError,
)
from notice_bus.model import Ack, AckStatus, NoticeEvent, utcnow
from notice_bus.retry import retrying
from notice_bus.schema_registry import KafkaSchemaStore
from notice_bus.settings import Settings
from notice_bus.sink import Sink
from notice_bus.topics import TopicNames, kafka_config
from notice_bus.validation import NOTICE_ID, validate_event

log = logging.getLogger("notice_bus.adapter")

Clock = Callable[[], datetime]


def group_id(settings: Settings, country: str) -> str:
    return f"{settings.topic_prefix}notice-bus.{country}"


class Adapter:
    """Consumes ``country``'s notices as a member of the country's consumer group."""

    def __init__(
        self,
        settings: Settings,
        country: str,
        sink: Sink,
        *,
        clock: Clock = utcnow,
        adapter_id: str | None = None,
        schemas: SchemaStore | None = None,
    ) -> None:
        self.settings = settings
        self.country = country
        self.sink = sink
        self.adapter_id = adapter_id or f"{country}@{socket.gethostname()}:{os.getpid()}"
        self._clock = clock
        self._names = TopicNames(settings.topic_prefix)
        store = schemas if schemas is not None else KafkaSchemaStore(settings)
        self._events = AvroCodec(load_schema("notice_event"), store)
        self._acks = AvroCodec(load_schema("ack"), store)
        self._retry = retrying(settings)
        config = kafka_config(settings, f"notice-bus-adapter-{country}")
        try:
            self._consumer = KafkaConsumer(
                **config,
                group_id=group_id(settings, country),
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
                max_poll_records=settings.batch_size,
            )
            self._producer = KafkaProducer(**config, linger_ms=5)
        except KafkaError as exc:
            raise BrokerUnavailable(
                f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}"
            ) from exc
        self._consumer.subscribe([self._names.notices(country)])

    # --- running ----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Process batches until ``stop`` is set, then finish the batch in hand and leave."""
        log.info("adapter %s consuming %s", self.adapter_id, self._names.notices(self.country))
        try:
            while not stop.is_set():
                self.step()
        finally:
            self.close()

    def step(self) -> int:
        """Poll once and process what came; returns the number of records handled."""
        batch = self._consumer.poll(timeout_ms=self.settings.poll_timeout_ms)
        records = [r for part in batch.values() for r in part]
        if not records:
            return 0
        try:
            self._process(records)
        except TransientError as exc:
            log.error("%s: batch not done, it will be read again: %s", self.country, exc)
            self._rewind(batch)
            return 0
        return len(records)

    def close(self) -> None:
        """Leave the consumer group and release connections."""
        try:
            self._producer.flush(timeout=10)
        finally:
            self._producer.close(timeout=10)
            self._consumer.close()
            self.sink.close()

    # --- the pipeline -----------------------------------------------------------------------

    def _process(self, records: Sequence[Any]) -> None:
        pending: list[Any] = []
        recorded: list[tuple[Any, NoticeEvent]] = []
        for record in records:
            try:
                event = self._decode(record)
                self._validate(record, event)
            except InvalidMessage as exc:
                pending += self._dead_letter(record, exc)
                continue
            self.sink.add(event, record.partition)
            pending.append(self._ack(event, AckStatus.RECEIVED, record))
            recorded.append((record, event))
        for attempt in self._retry:
            with attempt:
                self.sink.flush()
        pending += [self._ack(e, AckStatus.RECORDED, r) for r, e in recorded]
        self._confirm(pending)
        self._commit(records)

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
            raise self._invalid(
                record, f"notice {event.notice_id} is not addressed to {self.country}"
            )

    def _invalid(self, record: Any, reason: str) -> InvalidMessage:
        return InvalidMessage(
            reason,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=_key(record),
        )

    def _dead_letter(self, record: Any, exc: InvalidMessage) -> list[Any]:
        log.warning("%s: dead-lettered %s", self.country, exc)
        headers = [
            ("reason", exc.reason.encode()),
            ("source.topic", record.topic.encode()),
            ("source.partition", str(record.partition).encode()),
            ("source.offset", str(record.offset).encode()),
            ("adapter", self.adapter_id.encode()),
        ]
        dlq = self._producer.send(
            self._names.dead_letters(self.country),
            key=record.key,
            value=record.value,
            headers=headers,
        )
        notice_id = exc.key if exc.key and NOTICE_ID.match(exc.key) else ""
        version = _peek_version(self._events, record.value)
        ack = Ack(
            country=self.country,
            notice_id=notice_id,
            version=version,
            status=AckStatus.REJECTED,
            at=self._clock(),
            adapter_id=self.adapter_id,
            reason=exc.reason[:1000],
            source_partition=record.partition,
            source_offset=record.offset,
        )
        return [dlq, self._send_ack(ack)]

    def _ack(self, event: NoticeEvent, status: AckStatus, record: Any) -> Any:
        return self._send_ack(
            Ack(
                country=self.country,
                notice_id=event.notice_id,
                version=event.version,
                status=status,
                at=self._clock(),
                adapter_id=self.adapter_id,
                source_partition=record.partition,
                source_offset=record.offset,
            )
        )

    def _send_ack(self, ack: Ack) -> Any:
        return self._producer.send(
            self._names.acks(self.country),
            key=ack.notice_id.encode(),
            value=self._acks.encode(ack.to_avro()),
        )

    def _confirm(self, futures: Sequence[Any]) -> None:
        """Wait until the broker has every acknowledgement and dead letter."""
        try:
            self._producer.flush(timeout=30)
            for future in futures:
                future.get(timeout=30)
        except KafkaError as exc:
            raise BrokerUnavailable(f"acknowledgements not confirmed: {exc}") from exc

    def _commit(self, records: Sequence[Any]) -> None:
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for r in records:
            offsets[TopicPartition(r.topic, r.partition)] = OffsetAndMetadata(r.offset + 1, "", -1)
        try:
            self._consumer.commit(offsets)
        except CommitFailedError as exc:
            # The partitions moved to another member, which will read them again; our writes
            # and acknowledgements are idempotent, so nothing is lost and nothing doubles.
            log.warning("%s: commit refused after a rebalance: %s", self.country, exc)
        except KafkaError as exc:
            raise BrokerUnavailable(f"commit failed: {exc}") from exc

    def _rewind(self, batch: dict[TopicPartition, list[Any]]) -> None:
        self.sink.discard(tp.partition for tp in batch)
        for tp, records in batch.items():
            if records and tp in self._consumer.assignment():
                self._consumer.seek(tp, records[0].offset)


def _key(record: Any) -> str | None:
    try:
        return record.key.decode() if record.key is not None else None
    except UnicodeDecodeError:
        return None


def _peek_version(codec: AvroCodec, value: bytes | None) -> int:
    """The version of a rejected record, if it decodes at all; 0 otherwise."""
    try:
        version = codec.decode(value or b"").get("version", 0)
    except SchemaError:
        return 0
    return version if isinstance(version, int) else 0
