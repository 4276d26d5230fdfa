"""A schema store on a compacted Kafka topic.

Writers register their schema (key: fingerprint in hex, value: the schema's JSON) before they
send with it; a reader that meets an unknown fingerprint reads what the topic gained since its
last read. A country adapter built before a schema change can therefore read what a newer HQ
writes, and the reverse, without a separate registry service.

Anyone who can write to the topic can put anything there, so a record is taken only if its
value is a JSON Avro schema and its key is that schema's fingerprint; any other record is
skipped with an ERROR naming its topic, partition and offset, never raised: one bad record
must not stop HQ from publishing or an adapter from reading. An unknown fingerprint makes the
store look at the topic at most once per :data:`UNKNOWN_RETRY_S` (a message naming a schema
nobody registered, garbage, would otherwise cost a read of the topic each).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from notice_bus.errors import BrokerUnavailable, ConfigError
from notice_bus.runtime.identity import identity_of
from notice_bus.runtime.kafka import connecting, explain, kafka_config, retry_transient, unreachable
from notice_bus.runtime.settings import Settings
from notice_bus.wire.codec import MemorySchemaStore, Schema, SchemaStore, schema_fingerprint
from notice_bus.wire.topics import TopicNames

log = logging.getLogger("notice_bus.schema_registry")

#: How long a fingerprint found nowhere is answered "unknown" without looking again.
UNKNOWN_RETRY_S = 5.0
_READ_TIMEOUT_S = 30.0  # reading up to the end offsets seen at the start of a refresh
_MISSES_KEPT = 1000  # fingerprints remembered as unknown, at most


class KafkaSchemaStore(SchemaStore):
    """See the module docstring. ``records_read`` counts the topic's records read so far."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = TopicNames(settings.topic_prefix).schemas
        self._known = MemorySchemaStore()
        self._lock = threading.Lock()
        self._topic_exists = False
        self._positions: dict[int, int] = {}  # partition -> next offset to read
        self._misses: dict[bytes, float] = {}  # unknown fingerprint -> when last looked for
        self.records_read = 0

    def register(self, schema: Schema) -> bytes:
        fp = schema_fingerprint(schema)
        if self._known.lookup(fp) is None:
            self._refresh()
        if self._known.lookup(fp) is None:
            if not self._topic_exists:
                hidden = (
                    f", or {identity_of(self._settings)} may not see it (`notice-bus acl show`)"
                    if self._settings.secured
                    else ""
                )
                raise ConfigError(
                    f"topic {self._topic} does not exist at {self._settings.bootstrap_servers}"
                    f"{hidden}; run `notice-bus topics init --countries ...` first"
                )
            self._send(fp, schema)
            self._known.register(schema)
        return fp

    def lookup(self, fp: bytes) -> Schema | None:
        found = self._known.lookup(fp)
        if found is None and self._may_look_for(fp):
            self._refresh()
            found = self._known.lookup(fp)
        return found

    def _may_look_for(self, fp: bytes) -> bool:
        now = time.monotonic()
        with self._lock:
            last = self._misses.get(fp)
            if last is not None and now - last < UNKNOWN_RETRY_S:
                return False
            if len(self._misses) >= _MISSES_KEPT:
                self._misses = {k: t for k, t in self._misses.items() if now - t < UNKNOWN_RETRY_S}
            self._misses[fp] = now
            return True

    def _send(self, fp: bytes, schema: Schema) -> None:
        producer = KafkaProducer(
            **kafka_config(self._settings, "notice-bus-schemas", producer=True)
        )
        try:
            key, value = fp.hex().encode(), json.dumps(schema).encode()
            retry_transient(
                self._settings,
                "registering a schema",
                lambda: producer.send(self._topic, key=key, value=value).get(timeout=30),
            )
        except KafkaError as exc:
            raise BrokerUnavailable(
                f"registering schema {schema.get('name')} at {self._settings.bootstrap_servers}:"
                f" {explain(exc)}"
            ) from exc
        finally:
            producer.close()

    def _refresh(self) -> None:
        """Read what the topic gained since the last read (all of it the first time)."""
        with self._lock:
            connecting(self._settings)
            try:
                consumer = KafkaConsumer(
                    **kafka_config(self._settings, "notice-bus-schemas"),
                    enable_auto_commit=False,
                    auto_offset_reset="earliest",  # a position deleted since: what is left
                )
            except KafkaError as exc:
                raise unreachable(self._settings, exc) from exc
            try:
                partitions = consumer.partitions_for_topic(self._topic) or set()
                tps = [TopicPartition(self._topic, p) for p in sorted(partitions)]
                if not tps:
                    return
                self._topic_exists = True
                consumer.assign(tps)
                end = retry_transient(
                    self._settings,
                    f"reading schema topic {self._topic}",
                    lambda: consumer.end_offsets(tps),
                )
                for tp in tps:
                    start = self._positions.get(tp.partition, 0)
                    if start > end[tp]:  # the topic was made again: read it from the start
                        start = 0
                    self._positions[tp.partition] = start
                    if start:
                        consumer.seek(tp, start)
                    else:
                        consumer.seek_to_beginning(tp)
                if all(self._positions[tp.partition] >= end[tp] for tp in tps):
                    return  # nothing new
                self._read(consumer, tps, end)
            except KafkaError as exc:
                raise BrokerUnavailable(
                    f"cannot read schema topic {self._topic} at"
                    f" {self._settings.bootstrap_servers}: {explain(exc)}"
                ) from exc
            finally:
                consumer.close()

    def _read(self, consumer: Any, tps: list[TopicPartition], end: dict[Any, int]) -> None:
        deadline = time.monotonic() + _READ_TIMEOUT_S
        while any(self._positions[tp.partition] < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise BrokerUnavailable(
                    f"schema topic {self._topic} at {self._settings.bootstrap_servers}: not read"
                    f" to its end within {_READ_TIMEOUT_S:.0f} s"
                )
            for records in consumer.poll(timeout_ms=1000).values():
                for record in records:
                    self.records_read += 1
                    schema = self._schema_of(record)
                    if schema is not None:
                        self._known.register(schema)
            for tp in tps:
                # Past the records polled, and past compacted-away offsets and markers.
                self._positions[tp.partition] = consumer.position(tp)

    def _schema_of(self, record: Any) -> Schema | None:
        """The schema ``record`` registers, or None (logged) when it registers nothing."""
        reason, schema = "", None
        try:
            if record.value is None:
                reason = "no value"
            else:
                schema = json.loads(record.value)
                if not isinstance(schema, dict):
                    reason = f"not a schema but a JSON {type(schema).__name__}"
                elif record.key != schema_fingerprint(schema).hex().encode():
                    reason = f"key {record.key!r} is not the fingerprint of the schema's value"
        except ValueError as exc:  # not UTF-8, not JSON
            reason = f"not JSON: {exc}"
        except Exception as exc:  # fastavro raises several unrelated types for a bad schema
            reason = f"not an Avro schema: {type(exc).__name__}: {exc}"
        if reason:
            log.error(
                "schema store: skipped %s[%d]@%d: %s",
                record.topic,
                record.partition,
                record.offset,
                reason[:300],
            )
            return None
        return schema
