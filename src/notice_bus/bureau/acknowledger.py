"""The adapter's voice towards HQ: acknowledgements and dead letters, confirmed by the broker."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from kafka.errors import KafkaError

from notice_bus.errors import BrokerUnavailable, InvalidMessage
from notice_bus.runtime.kafka import explain
from notice_bus.trust.ack_mac import AckSigner
from notice_bus.wire.codec import AvroCodec
from notice_bus.wire.model import Ack, AckStatus, NoticeEvent
from notice_bus.wire.topics import TopicNames
from notice_bus.wire.validation import NOTICE_ID

log = logging.getLogger("notice_bus.adapter")
BUNDLE = 500  # events per acknowledgement message: about 10 KB


class Acknowledger:
    """Sends acknowledgements and dead letters for one country.

    Sending returns a future; nothing counts as said until it has succeeded: the adapter's
    :class:`~notice_bus.runtime.committer.Committer` commits a batch's offsets only after that.
    """

    def __init__(
        self,
        producer: Any,
        names: TopicNames,
        country: str,
        adapter_id: str,
        codec: AvroCodec,
        clock: Callable[[], datetime],
        mac: AckSigner | None = None,
    ) -> None:
        self._producer = producer
        self._mac = mac
        self._acks_topic = names.acks(country)
        self._dlq_topic = names.dead_letters(country)
        self._country = country
        self._adapter_id = adapter_id
        self._codec = codec
        self._clock = clock

    def ack(
        self,
        status: AckStatus,
        taken: Sequence[tuple[Any, NoticeEvent]],
        received_at: datetime | None = None,
        at: datetime | None = None,
    ) -> list[Any]:
        """Acknowledge the (record, event) pairs of one batch with ``status``: one message per
        ``BUNDLE`` events, since a send costs far more than the few bytes an event adds."""
        at = at or self._clock()
        futures = []
        for i in range(0, len(taken), BUNDLE):
            (record, first), *rest = taken[i : i + BUNDLE]
            ack = Ack(
                country=self._country,
                notice_id=first.notice_id,
                version=first.version,
                status=status,
                at=at,
                adapter_id=self._adapter_id,
                source_partition=record.partition,
                source_offset=record.offset,
                received_at=received_at,
                also=tuple((e.notice_id, e.version) for _, e in rest),
            )
            futures.append(self._send(ack))
        return futures

    def reject(self, record: Any, exc: InvalidMessage, version: int) -> list[Any]:
        """Park ``record``'s original bytes in the dead-letter topic and tell HQ why."""
        log.warning("%s: dead-lettered %s", self._country, exc)
        headers = [
            ("reason", exc.reason.encode()),
            ("source.topic", record.topic.encode()),
            ("source.partition", str(record.partition).encode()),
            ("source.offset", str(record.offset).encode()),
            ("adapter", self._adapter_id.encode()),
        ]
        try:
            parked = self._producer.send(
                self._dlq_topic, key=record.key, value=record.value, headers=headers
            )
        except KafkaError as err:
            raise BrokerUnavailable(f"dead letter not sent: {err}") from err
        ack = Ack(
            country=self._country,
            notice_id=exc.key if exc.key and NOTICE_ID.match(exc.key) else "",
            version=version,
            status=AckStatus.REJECTED,
            at=self._clock(),
            adapter_id=self._adapter_id,
            reason=exc.reason[:1000],
            source_partition=record.partition,
            source_offset=record.offset,
        )
        return [parked, self._send(ack)]

    def _send(self, ack: Ack) -> Any:
        key, value = ack.notice_id.encode(), self._codec.encode(ack.to_avro())
        headers = self._mac.headers(key, value) if self._mac else None
        try:
            return self._producer.send(self._acks_topic, key=key, value=value, headers=headers)
        except KafkaError as exc:  # send() itself fails when the broker is gone for long
            raise BrokerUnavailable(f"acknowledgement not sent: {explain(exc)}") from exc
