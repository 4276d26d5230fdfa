"""A national bureau's adapter: countries' notices topics into their local information systems.

An adapter serves one country, or several (a regional hub, or one machine for many bureaus:
``notice-bus adapter --country BE,LU,NL``). Each country keeps its own topics, local system and
acknowledgements in a :class:`~notice_bus.lane.Lane`; the countries share one consumer, one
producer and one commit, which is what lets a 2-core machine serve all 196.

Each poll runs the same single-purpose steps, in order:

1. **decode** the Avro message (any schema version the schema store knows);
2. **validate** it against the notice rules and check it is addressed to that country;
3. **write** the valid ones through the country's :class:`~notice_bus.sink.Sink`;
4. **acknowledge**: RECORDED to the country's acks topic, one message for the batch's events,
   carrying when they were received (a separate RECEIVED goes only when the write has to wait);
   invalid records go to the dead-letter topic with their reason and a REJECTED acknowledgement;
5. **commit** the offsets, only once every record is written or dead-lettered and every
   acknowledgement is confirmed by the broker.

When a country's local system is unavailable, a few quick retries absorb a blip; past them
the adapter *holds* that country's batch: it pauses that country's partitions, keeps polling
(so the group sees a live member and does not rebalance, and the other countries go on),
probes the system's health with backoff, and finishes the batch when the system answers again.
When the broker fails us, the batch is read again from the committed offsets; writes are
idempotent and the tracker deduplicates acknowledgements, so a replay is harmless.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from notice_bus.codec import SchemaStore
from notice_bus.committer import Committer
from notice_bus.errors import (
    BrokerUnavailable,
    ConfigError,
    LocalSystemUnavailable,
    TransientError,
)
from notice_bus.lane import Batch, Lane, write_all
from notice_bus.metrics import AdapterMetrics
from notice_bus.model import utcnow
from notice_bus.retry import retrying
from notice_bus.schema_registry import KafkaSchemaStore
from notice_bus.settings import Settings
from notice_bus.sink import Sink
from notice_bus.topics import TopicNames, corked, kafka_config, poll_or_none

log = logging.getLogger("notice_bus.adapter")

Clock = Callable[[], datetime]
_WRITERS = 8  # a hub's lanes writing at once: enough to overlap waits on the local systems


def group_id(settings: Settings, country: str) -> str:
    return f"{settings.topic_prefix}notice-bus.{country}"


def hub_group_id(settings: Settings, hub: str) -> str:
    return f"{settings.topic_prefix}notice-bus.hub.{hub}"


def hub_name(countries: Iterable[str]) -> str:
    """A stable default name for the hub of ``countries``: a restart resumes its offsets."""
    return hashlib.sha1(",".join(sorted(countries)).encode()).hexdigest()[:10]


class Adapter:
    """Consumes the notices of the countries of ``sinks`` (country -> its local system).

    One country uses that country's consumer group. Several use the group of ``hub`` (a name;
    by default derived from the countries), so several instances of a hub share its work;
    a country moved between a hub and an adapter of its own is read again from the start of
    its (compacted) topic, which idempotent writes absorb.

    ``from_beginning`` re-reads the whole topic once, for a bureau rebuilding its local copy.
    ``instance_id`` makes the member static: a restarted instance with the same id takes its
    partitions back at once, without waiting for the session to time out. ``producer`` may be
    shared with other code of the process (it is thread-safe); then it is the caller's to close.
    """

    def __init__(
        self,
        settings: Settings,
        sinks: Mapping[str, Sink],
        *,
        hub: str | None = None,
        clock: Clock = utcnow,
        adapter_id: str | None = None,
        schemas: SchemaStore | None = None,
        from_beginning: bool = False,
        instance_id: str | None = None,
        metrics: AdapterMetrics | None = None,
        producer: KafkaProducer | None = None,
    ) -> None:
        if not sinks:
            raise ConfigError("an adapter needs at least one country")
        self.settings = settings
        self.countries = sorted(sinks)
        if len(sinks) == 1 and hub is None:
            label, group = self.countries[0], group_id(settings, self.countries[0])
        else:
            hub = hub or hub_name(sinks)
            label, group = f"hub-{hub}", hub_group_id(settings, hub)
        self.adapter_id = adapter_id or f"{label}@{socket.gethostname()}:{os.getpid()}"
        self.group = group
        names = TopicNames(settings.topic_prefix)
        store = schemas if schemas is not None else KafkaSchemaStore(settings)
        self._retry = retrying(settings)
        self._closed = False
        self._rewind_on_assign = from_beginning
        config = kafka_config(settings, f"notice-bus-adapter-{label}")
        try:
            self._consumer = KafkaConsumer(
                **config,
                group_id=group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
                max_poll_records=settings.batch_size,
                session_timeout_ms=settings.session_timeout_ms,
                heartbeat_interval_ms=max(1000, settings.session_timeout_ms // 4),
                group_instance_id=instance_id,
                metadata_max_age_ms=30000,  # notice added partitions within half a minute
            )
            self._owns_producer = producer is None
            if producer is None:
                producer = KafkaProducer(**config, linger_ms=5)
        except KafkaError as exc:
            raise BrokerUnavailable(
                f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}"
            ) from exc
        self._producer = producer
        self._committer = Committer(self._consumer, producer)
        self.metrics = metrics or AdapterMetrics()
        self._lanes: dict[str, Lane] = {}  # by topic: notices and reminders of each country
        answers_every_s = max(1.0, len(sinks) / 10)
        for i, (country, sink) in enumerate(sinks.items()):
            lane = Lane(
                country,
                sink,
                producer=producer,
                names=names,
                store=store,
                adapter_id=self.adapter_id,
                clock=clock,
                # Answers are due in hours; a hub of many countries looks for them less often
                # than once a second each (a query per country per second): 196 countries
                # look every 20 s, ten queries a second, spread out rather than all at once.
                answers_every_s=answers_every_s,
                answers_first_after_s=answers_every_s * i / len(sinks),
            )
            self._lanes.update(dict.fromkeys(lane.topics, lane))
        self.lanes = list(dict.fromkeys(self._lanes.values()))  # one per country
        self._pool = (
            ThreadPoolExecutor(min(_WRITERS, len(sinks)), thread_name_prefix="notice-bus-write")
            if len(sinks) > 1
            else None
        )
        self._consumer.subscribe(list(self._lanes), listener=_Rebalance(self))
        # The topics' metadata, fetched after subscribing and before joining: a leader then
        # assigns every partition at once, and kafka-python's snapshot of the subscribed
        # topics is whole. Fetched before subscribing, the snapshot stayed empty until the
        # next metadata refresh (30 s on), which then rebalanced the group mid-traffic.
        try:
            known = self._consumer.topics()
        except KafkaError as exc:
            self.close()
            raise BrokerUnavailable(
                f"cannot list topics at {settings.bootstrap_servers}: {exc}"
            ) from exc
        missing = [t for t in self._lanes if t not in known]
        if missing:
            self.close()
            raise ConfigError(
                f"topic {missing[0]} does not exist at {settings.bootstrap_servers}; run"
                f" `notice-bus topics init --countries {','.join(self.countries)}` first"
            )

    # --- running ----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Process batches until ``stop`` is set, then finish the batch in hand and leave."""
        which = ",".join(self.countries) if len(self.countries) <= 5 else len(self.countries)
        log.info("adapter %s consuming the notices of %s", self.adapter_id, which)
        try:
            while not stop.is_set():
                self.step()
            if self.holding:
                log.warning("leaving with held batches; they will be read again")
        finally:
            self.close()

    def step(self) -> int:
        """Poll once and process what came; returns the number of records written."""
        for lane in self.lanes:
            lane.channel.relay_responses(lane.sink)
        batches: dict[str, Batch] = {}
        lanes: dict[str, Lane] = {}
        written: list[tuple[Lane, Batch]] = []
        try:
            self._committer.settle(wait=False)
            done = self._retry_held()
            # Until the group has given us partitions, poll long: kafka-python drives the
            # join's round trips only inside poll, and short polls can starve it.
            wait_ms = self.settings.poll_timeout_ms if self._consumer.assignment() else 2000
            polled = poll_or_none(self._consumer, wait_ms, self.adapter_id)
            if polled is None:  # the broker is unreachable: nothing read, nothing to lose
                return done
            if not polled:
                self._committer.settle(wait=True)  # idle: make everything durable now
                return done
            for tp, records in polled.items():
                lane = self._lanes[tp.topic]
                lanes[lane.country] = lane
                batches.setdefault(lane.country, Batch([])).records.extend(records)
            work = [(lanes[country], batch) for country, batch in batches.items()]
            for lane, batch in work:
                lane.take_in(batch)
            outcomes = write_all(work, self._flush, self._pool)
            for (lane, batch), away in zip(work, outcomes, strict=True):
                if away is not None:
                    self._hold(lane, batch, away)
                else:
                    written.append((lane, batch))
            self._finish(written)
        except TransientError as exc:
            self._abandon([b for c, b in batches.items() if lanes[c].held is not b], exc)
            return 0
        return done + sum(len(b.records) for _, b in written)

    @property
    def holding(self) -> bool:
        """Whether a batch waits for a local system to come back."""
        return any(lane.held is not None for lane in self.lanes)

    def close(self) -> None:
        """Leave the consumer group and release connections. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._committer.settle(wait=True)
        except TransientError as exc:
            log.warning("leaving uncommitted batches; they will be read again: %s", exc)
        try:
            self._producer.flush(timeout=10)  # a shared producer: what this adapter said, too
        finally:
            if self._owns_producer:
                self._producer.close(timeout=10)
            self._consumer.close()
            if self._pool is not None:
                self._pool.shutdown()
            for lane in self.lanes:
                lane.sink.close()

    # --- the pipeline -----------------------------------------------------------------------

    def _flush(self, sink: Sink) -> None:
        for attempt in self._retry:
            with attempt:
                sink.flush()

    def _finish(self, written: Sequence[tuple[Lane, Batch]]) -> None:
        """After the writes: RECORDED acks; the committer commits once the broker has them."""
        with corked(self._producer):  # one wake-up of the network thread for them all
            for lane, batch in written:
                lane.recorded(batch)

                def counted(lane: Lane = lane, batch: Batch = batch) -> None:
                    self.metrics.finished(lane.country, len(batch.recorded), batch.rejected)

                self._committer.add(batch.records, batch.said, counted)

    # --- outages ----------------------------------------------------------------------------

    def _partitions(self, lane: Lane) -> list[TopicPartition]:
        return [tp for tp in self._consumer.assignment() if tp.topic in lane.topics]

    def _hold(self, lane: Lane, batch: Batch, exc: Exception) -> None:
        log.error(
            "%s: local system unavailable, holding %d records: %s",
            lane.country,
            len(batch.records),
            exc,
        )
        self._consumer.pause(*self._partitions(lane))
        lane.received(batch)
        self.metrics.errors.labels(lane.country, "local_system_unavailable").inc()
        self.metrics.holding.labels(lane.country).set(1)
        batch.next_try = time.monotonic() + self._backoff(batch.attempts)
        lane.held = batch

    def _retry_held(self) -> int:
        """Try again the held batches whose time has come; returns the records finished."""
        done = 0
        for lane in self.lanes:
            batch = lane.held
            if batch is None or time.monotonic() < batch.next_try:
                continue
            batch.attempts += 1
            health = lane.sink.health()
            try:
                if not health.ok:
                    raise LocalSystemUnavailable(health.detail or "health check failed")
                lane.write(batch, self._flush)
                self._finish([(lane, batch)])
            except LocalSystemUnavailable as exc:
                batch.next_try = time.monotonic() + self._backoff(batch.attempts)
                log.warning(
                    "%s: still unavailable (attempt %d): %s", lane.country, batch.attempts, exc
                )
                continue
            except TransientError as exc:
                self._release(lane)
                self._abandon([batch], exc)
                continue
            log.info("%s: local system back after %d attempts", lane.country, batch.attempts)
            self._release(lane)
            done += len(batch.records)
        return done

    def _release(self, lane: Lane) -> None:
        lane.held = None
        self.metrics.holding.labels(lane.country).set(0)
        self._consumer.resume(*self._partitions(lane))

    def _backoff(self, attempts: int) -> float:
        return float(min(self.settings.retry_max_s, self.settings.retry_initial_s * 2**attempts))

    def _abandon(self, batches: Sequence[Batch], exc: Exception) -> None:
        """Read the batches again from their first offsets, and the uncommitted ones too."""
        first = self._committer.forget()
        for batch in batches:
            for r in batch.records:
                first.setdefault(TopicPartition(r.topic, r.partition), r.offset)
        log.error("batch not done, %d partitions will be read again: %s", len(first), exc)
        for tp in first:
            lane = self._lanes[tp.topic]
            self.metrics.errors.labels(lane.country, "broker_unavailable").inc()
            lane.sink.discard([tp.partition])
        assigned = self._consumer.assignment()
        for tp, offset in first.items():
            if tp in assigned:
                self._consumer.seek(tp, offset)

    def _revoked(self, partitions: Sequence[TopicPartition]) -> None:
        # kafka-python runs this on its IO thread, where nothing may block (no synchronous
        # commit): batches not committed yet are read again by the partitions' next owner.
        self._committer.forget()
        for tp in partitions:
            lane = self._lanes.get(tp.topic)
            if lane is None:
                continue
            if lane.held is not None:
                log.warning(
                    "%s: partitions revoked while holding a batch; its new owner re-reads it",
                    lane.country,
                )
                lane.held = None
                self.metrics.holding.labels(lane.country).set(0)
            if tp.topic == lane.topic:
                lane.sink.discard([tp.partition])

    def _assigned(self, partitions: Sequence[TopicPartition]) -> None:
        ours = {lane.topic for lane in self.lanes}
        notices = [tp for tp in partitions if tp.topic in ours]
        if self._rewind_on_assign and notices:
            log.info("reading %d partitions from the beginning", len(notices))
            self._consumer.seek_to_beginning(*notices)
            self._rewind_on_assign = False


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, adapter: Adapter) -> None:
        self._adapter = adapter

    def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self._adapter._revoked(revoked)

    def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self._adapter._assigned(assigned)
