"""A schema store on a compacted Kafka topic.

Writers register their schema (key: fingerprint in hex, value: the schema's JSON) before they
send with it; a reader that meets an unknown fingerprint reads the topic again. A country
adapter built before a schema change can therefore read what a newer HQ writes, and the
reverse, without a separate registry service.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from notice_bus.codec import MemorySchemaStore, Schema, SchemaStore, schema_fingerprint
from notice_bus.errors import BrokerUnavailable, ConfigError
from notice_bus.settings import Settings
from notice_bus.topics import TopicNames, kafka_config


class KafkaSchemaStore(SchemaStore):
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = TopicNames(settings.topic_prefix).schemas
        self._known = MemorySchemaStore()
        self._lock = threading.Lock()
        self._topic_exists = False

    def register(self, schema: Schema) -> bytes:
        fp = schema_fingerprint(schema)
        if self._known.lookup(fp) is None:
            self._refresh()
        if self._known.lookup(fp) is None:
            if not self._topic_exists:
                raise ConfigError(
                    f"topic {self._topic} does not exist at {self._settings.bootstrap_servers};"
                    " run `notice-bus topics init --countries ...` first"
                )
            self._send(fp, schema)
            self._known.register(schema)
        return fp

    def lookup(self, fp: bytes) -> Schema | None:
        found = self._known.lookup(fp)
        if found is None:
            self._refresh()
            found = self._known.lookup(fp)
        return found

    def _send(self, fp: bytes, schema: Schema) -> None:
        producer = KafkaProducer(
            **kafka_config(self._settings, "notice-bus-schemas"), max_block_ms=15000
        )
        try:
            producer.send(
                self._topic, key=fp.hex().encode(), value=json.dumps(schema).encode()
            ).get(timeout=30)
        except KafkaError as exc:
            raise BrokerUnavailable(
                f"registering schema {schema.get('name')} at {self._settings.bootstrap_servers}:"
                f" {exc}"
            ) from exc
        finally:
            producer.close()

    def _refresh(self) -> None:
        """Read the whole topic; it is small (one record per schema version)."""
        with self._lock:
            consumer: Any = None
            try:
                consumer = KafkaConsumer(
                    **kafka_config(self._settings, "notice-bus-schemas"),
                    enable_auto_commit=False,
                )
                partitions = consumer.partitions_for_topic(self._topic) or set()
                tps = [TopicPartition(self._topic, p) for p in partitions]
                if not tps:
                    return
                self._topic_exists = True
                consumer.assign(tps)
                consumer.seek_to_beginning()
                end = consumer.end_offsets(tps)
                while any(consumer.position(tp) < end[tp] for tp in tps):
                    for records in consumer.poll(timeout_ms=1000).values():
                        for record in records:
                            self._known.register(json.loads(record.value))
            except KafkaError as exc:
                raise BrokerUnavailable(
                    f"cannot read schema topic {self._topic} at"
                    f" {self._settings.bootstrap_servers}: {exc}"
                ) from exc
            finally:
                if consumer is not None:
                    consumer.close()
