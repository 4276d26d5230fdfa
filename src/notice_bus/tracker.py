"""HQ's tracker: learns what was sent to every country and what every country acknowledged.

It reads every country's notices topic (what HQ delivered) and acks topic (what came back),
by pattern, so countries added later are picked up, and stores both in its database. Both kinds
of topic date records with the broker's clock (LogAppendTime), which the report prefers to any
bureau's clock.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaConsumer
from kafka.errors import KafkaError

from notice_bus.codec import AvroCodec, SchemaStore, load_schema
from notice_bus.db import dialect_insert, make_engine, transaction
from notice_bus.errors import BrokerUnavailable, SchemaError, TransientError
from notice_bus.model import Ack, AckStatus, NoticeEvent
from notice_bus.retry import retrying
from notice_bus.schema_registry import KafkaSchemaStore
from notice_bus.settings import Settings
from notice_bus.tables import ACK, SENT, TRACKER_TABLES
from notice_bus.topics import TopicNames, kafka_config

log = logging.getLogger("notice_bus.tracker")
_SENT: Any = SENT
_ACK: Any = ACK


class Tracker:
    def __init__(
        self,
        settings: Settings,
        *,
        database_url: str | None = None,
        schemas: SchemaStore | None = None,
    ) -> None:
        self.settings = settings
        self.engine = make_engine(database_url or settings.tracker_database_url, TRACKER_TABLES)
        names = TopicNames(settings.topic_prefix)
        self._names = names
        store = schemas if schemas is not None else KafkaSchemaStore(settings)
        self._events = AvroCodec(load_schema("notice_event"), store)
        self._acks = AvroCodec(load_schema("ack"), store)
        self._retry = retrying(settings)
        insert = dialect_insert(self.engine)
        self._insert_sent = insert(_SENT).on_conflict_do_nothing()
        self._insert_ack = insert(_ACK).on_conflict_do_nothing()
        self._notices = re.compile(names.pattern("notices"))
        try:
            self._consumer = KafkaConsumer(
                **kafka_config(settings, "notice-bus-tracker"),
                group_id=f"{settings.topic_prefix}notice-bus.tracker",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
                max_poll_records=2000,
                metadata_max_age_ms=3000,  # notice new countries' topics within seconds
            )
        except KafkaError as exc:
            raise BrokerUnavailable(
                f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}"
            ) from exc
        prefix = re.escape(settings.topic_prefix)
        self._consumer.subscribe(pattern=f"^{prefix}(notices|acks)\\.[A-Z]{{2}}$")

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                self.step()
        finally:
            self.close()

    def step(self) -> int:
        batch = self._consumer.poll(timeout_ms=self.settings.poll_timeout_ms)
        records = [r for part in batch.values() for r in part]
        if not records:
            return 0
        try:
            for attempt in self._retry:
                with attempt:
                    self._store(records)
            self._consumer.commit()
        except (TransientError, KafkaError) as exc:
            log.error("tracker: batch not stored, it will be read again: %s", exc)
            for tp, part in batch.items():
                self._consumer.seek(tp, part[0].offset)
            return 0
        return len(records)

    def close(self) -> None:
        self._consumer.close()
        self.engine.dispose()

    def _store(self, records: Sequence[Any]) -> None:
        sent: list[dict[str, Any]] = []
        acks: list[dict[str, Any]] = []
        for r in records:
            country = self._names.country_of(r.topic)
            try:
                if self._notices.match(r.topic):
                    sent.append(self._sent_row(country, r))
                else:
                    acks.append(self._ack_row(country, r))
            except (SchemaError, KeyError, ValueError, TypeError) as exc:
                # The adapter dead-letters bad notices and says so in a REJECTED ack; a bad
                # ack can only be reported here.
                log.error("tracker: cannot read %s[%d]@%d: %s", r.topic, r.partition, r.offset, exc)
        with transaction(self.engine) as conn:
            if sent:
                conn.execute(self._insert_sent, sent)
            if acks:
                conn.execute(self._insert_ack, acks)

    def _sent_row(self, country: str | None, r: Any) -> dict[str, Any]:
        e = NoticeEvent.from_avro(self._events.decode(r.value))
        return {
            "country": country,
            "notice_id": e.notice_id,
            "version": e.version,
            "action": e.action.value,
            "published_at": e.published_at,
            "broker_at": _broker_time(r),
        }

    def _ack_row(self, country: str | None, r: Any) -> dict[str, Any]:
        a = Ack.from_avro(self._acks.decode(r.value))
        # The topic says who answered: ACLs confine a bureau to its own acks topic.
        rejected = a.status is AckStatus.REJECTED
        return {
            "country": country,
            "notice_id": a.notice_id,
            "version": a.version,
            "status": a.status.value,
            "position": f"{a.source_partition}:{a.source_offset}" if rejected else "",
            "at": a.at,
            "broker_at": _broker_time(r),
            "adapter_id": a.adapter_id,
            "reason": a.reason,
        }


def _broker_time(record: Any) -> datetime:
    return datetime.fromtimestamp(record.timestamp / 1000, UTC)
