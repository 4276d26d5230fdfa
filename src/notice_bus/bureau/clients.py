"""The adapter's Kafka clients: one consumer of its countries' topics, one producer of their
acknowledgements and dead letters."""

from __future__ import annotations

from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from notice_bus.runtime.identity import check_access
from notice_bus.runtime.kafka import FETCH_WAIT_MS, connecting, kafka_config, unreachable
from notice_bus.runtime.settings import Settings


def open_clients(
    settings: Settings,
    client_id: str,
    group: str,
    topics: list[str],
    instance_id: str | None,
    producer: Any | None,
) -> tuple[Any, Any]:
    """The consumer of ``group`` and ``producer``, or a producer of our own if it is None.
    BrokerUnavailable (see :func:`~notice_bus.runtime.kafka.unreachable`) if either cannot
    be made; nothing is left running then. On a secured cluster, AccessDenied first unless
    we may read ``topics`` and use ``group``: a consumer would leave a forbidden topic out of
    its assignment, silently."""
    connecting(settings)
    if settings.secured:
        check_access(settings, topics, group)
    try:
        consumer = KafkaConsumer(
            **kafka_config(settings, client_id),
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_records=settings.batch_size,
            fetch_max_wait_ms=FETCH_WAIT_MS,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=max(1000, settings.session_timeout_ms // 4),
            group_instance_id=instance_id,
            metadata_max_age_ms=30000,  # notice added partitions within half a minute
        )
    except KafkaError as exc:
        raise unreachable(settings, exc) from exc
    if producer is None:
        try:
            producer = KafkaProducer(
                **kafka_config(settings, client_id, producer=True), linger_ms=5
            )
        except KafkaError as exc:
            consumer.close()  # not left running while a service tries again
            raise unreachable(settings, exc) from exc
    return consumer, producer
