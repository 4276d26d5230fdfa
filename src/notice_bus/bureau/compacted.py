"""The latest event of some notices on a country's compacted ``notices.CC``: what a copy
check mends from (:mod:`notice_bus.bureau.copies`).

Read from the topic's beginning without a consumer group (nothing is committed: this is a
look, not the adapter's consumption). Each record is taken as the adapter takes it in: HQ's
signature checked where the bureau has a root key, decoded and validated, and an update no
longer addressed to the country turned into its cancel. Records that fail are logged and
skipped: a mend writes only what the adapter would have written.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from notice_bus.errors import BrokerUnavailable, InvalidNotice, SchemaError
from notice_bus.runtime.kafka import connecting, explain, kafka_config, unreachable
from notice_bus.runtime.settings import Settings
from notice_bus.trust.keyring_topic import NoticeChecker
from notice_bus.wire.codec import AvroCodec, SchemaStore, load_schema
from notice_bus.wire.model import NOT_ADDRESSED, Action, NoticeEvent
from notice_bus.wire.topics import TopicNames
from notice_bus.wire.validation import validate_event

log = logging.getLogger("notice_bus.copies")


def latest_events(
    settings: Settings,
    country: str,
    ids: Iterable[str],
    store: SchemaStore,
    checker: NoticeChecker | None,
) -> dict[str, NoticeEvent]:
    """The latest usable event of each of ``ids`` on ``country``'s notices topic (ids the
    topic does not hold are absent); :class:`BrokerUnavailable` if it cannot be read to its
    end in ``max(60, broker_timeout_s * 6)`` seconds."""
    wanted = set(ids)
    topic = TopicNames(settings.topic_prefix).notices(country)
    codec = AvroCodec(load_schema("notice_event"), store)
    out: dict[str, NoticeEvent] = {}
    connecting(settings)
    try:
        consumer = KafkaConsumer(
            **kafka_config(settings, "notice-bus-copy-mend"), enable_auto_commit=False
        )
    except KafkaError as exc:
        raise unreachable(settings, exc) from exc
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        deadline = time.monotonic() + max(60.0, settings.broker_timeout_s * 6)
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            if time.monotonic() > deadline:
                raise BrokerUnavailable(f"{topic} not read to its end in time")
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    event = _as_taken(codec, r, wanted, country, checker)
                    if event is not None:
                        held = out.get(event.notice_id)
                        if held is None or held.version < event.version:
                            out[event.notice_id] = event
    except KafkaError as exc:
        raise BrokerUnavailable(f"reading {topic}: {explain(exc)}") from exc
    finally:
        consumer.close()
    return out


def _as_taken(
    codec: AvroCodec,
    record: Any,
    wanted: set[str],
    country: str,
    checker: NoticeChecker | None,
) -> NoticeEvent | None:
    if record.key is None or record.value is None or record.key.decode() not in wanted:
        return None
    if checker is not None and (problem := checker.problem(record)):
        log.error("%s@%d: not signed by HQ, not used: %s", record.topic, record.offset, problem)
        return None
    try:
        event = NoticeEvent.from_avro(codec.decode(record.value))
        validate_event(event)
    except (SchemaError, InvalidNotice, KeyError, ValueError, TypeError) as exc:
        log.error("%s@%d: unreadable, not used: %s", record.topic, record.offset, exc)
        return None
    if event.action is Action.CANCEL or event.targets(country):
        return event
    if event.action is Action.PUBLISH:
        return None  # never addressed here
    return dataclasses.replace(event, action=Action.CANCEL, person=None, reason=NOT_ADDRESSED)
