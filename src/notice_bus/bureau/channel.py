"""The adapter's other channel with HQ, beside notices and acknowledgements: HQ's reminders of
overdue notices come in (surfaced through the local system's ``remind`` hook), and the
bureau's own answers go out (taken from the local system's ``responses`` hook, or given by an
officer with ``notice-bus respond``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from notice_bus.bureau.sinks.sink import Sink
from notice_bus.errors import BrokerUnavailable, NoticeBusError, SchemaError
from notice_bus.runtime.kafka import connecting, explain, kafka_config, unreachable
from notice_bus.runtime.settings import Settings
from notice_bus.trust.ack_mac import AckSigner, signer_for
from notice_bus.wire.codec import AvroCodec, SchemaStore, load_schema
from notice_bus.wire.model import Answer, Reminder, Response, utcnow
from notice_bus.wire.schema_registry import KafkaSchemaStore
from notice_bus.wire.topics import TopicNames
from notice_bus.wire.validation import check_notice_id

log = logging.getLogger("notice_bus.adapter")


class BureauChannel:
    def __init__(
        self,
        producer: Any,
        names: TopicNames,
        country: str,
        store: SchemaStore,
        *,
        every_s: float = 1.0,
        first_after_s: float = 0.0,
        mac: AckSigner | None = None,
    ) -> None:
        self._producer = producer
        self._country = country
        self._mac = mac
        self.reminders_topic = names.reminders(country)
        self._responses_topic = names.responses(country)
        self._reminders = AvroCodec(load_schema("reminder"), store)
        self._responses = AvroCodec(load_schema("response"), store)
        self._every_s = every_s
        self._next = time.monotonic() + first_after_s

    def surface(self, sink: Sink, record: Any) -> None:
        """Hand a reminder record to the local system. A reminder that cannot be read is
        logged and dropped: it is advice, and HQ sends it again if still overdue."""
        try:
            reminder = Reminder.from_avro(self._reminders.decode(record.value or b""))
        except (SchemaError, KeyError, ValueError) as exc:
            log.error(
                "%s: unreadable reminder %s[%d]@%d: %s",
                self._country,
                record.topic,
                record.partition,
                record.offset,
                exc,
            )
            return
        sink.remind(reminder)

    def due(self) -> bool:
        """Whether it is time to look for the bureau's answers again."""
        return time.monotonic() >= self._next

    def relay_responses(self, sink: Sink) -> int:
        """Send the answers the local system holds (at most once every ``every_s``); returns
        how many went out. Failures are logged and retried on a later call; nothing here
        raises, so a bad answer in a bureau's table never stops its adapter."""
        if not self.due():
            return 0
        self._next = time.monotonic() + self._every_s
        try:
            pending = sink.responses()
            if pending:
                send(
                    self._producer,
                    self._responses,
                    self._responses_topic,
                    [r for _, r in pending],
                    self._country,
                    self._mac,
                )
                sink.responses_sent([h for h, _ in pending])
        except NoticeBusError as exc:
            log.error("%s: answers not sent yet: %s", self._country, exc)
            return 0
        except Exception:  # a plug-in's bug: logged, and tried again later
            log.exception("%s: answers not sent yet: the local system's code raised", self._country)
            return 0
        return len(pending)


def send(
    producer: Any,
    codec: AvroCodec,
    topic: str,
    answers: Sequence[Response],
    country: str,
    mac: AckSigner | None,
) -> None:
    """Send answers for ``country``, with ``mac``'s tag, and wait until the broker has them."""
    try:
        futures = []
        for a in answers:
            key = a.notice_id.encode()
            value = codec.encode(
                Response(country, a.notice_id, a.answer, a.at, a.responder, a.text).to_avro()
            )
            headers = mac.headers(key, value) if mac else None
            futures.append(producer.send(topic, key=key, value=value, headers=headers))
        producer.flush(timeout=30)
        for f in futures:
            f.get(timeout=30)
    except KafkaError as exc:
        raise BrokerUnavailable(f"answers not confirmed: {explain(exc)}") from exc


def respond(
    settings: Settings,
    country: str,
    notice_id: str,
    answer: Answer,
    text: str | None = None,
    responder: str = "officer",
    *,
    clock: Callable[[], datetime] = utcnow,
) -> Response:
    """Send a bureau's answer to a notice on the country's responses topic."""
    check_notice_id(notice_id)
    response = Response(country, notice_id, answer, clock(), responder, text)
    codec = AvroCodec(load_schema("response"), KafkaSchemaStore(settings))
    connecting(settings)
    try:
        producer = KafkaProducer(**kafka_config(settings, "notice-bus-respond", producer=True))
    except KafkaError as exc:
        raise unreachable(settings, exc) from exc
    try:
        send(
            producer,
            codec,
            TopicNames(settings.topic_prefix).responses(country),
            [response],
            country,
            signer_for(settings, country),
        )
    finally:
        producer.close(timeout=10)
    return response
