"""A national bureau's adapter: countries' notices topics into their local information systems.

An adapter serves one country, or several (a regional hub, or one machine for many bureaus:
``notice-bus adapter --country BE,LU,NL``). Each country keeps its own topics, local system and
acknowledgements in a :class:`~notice_bus.bureau.lane.Lane`; the countries share one consumer, one
producer and one commit, which is what lets a 2-core machine serve all 196.

Each poll runs the same single-purpose steps, in order:

1. **decode** the Avro message (any schema version the schema store knows);
2. **validate** it against the notice rules; an update no longer addressed to that country
   becomes a withdrawal of its copy (a cancel is applied whoever it names);
3. **write** the valid ones through the country's :class:`~notice_bus.bureau.sinks.sink.Sink`,
   on a writer thread (:mod:`notice_bus.bureau.writers`): the polling thread never waits on a
   local system;
4. **acknowledge**: RECORDED to the country's acks topic, one message for the batch's events,
   carrying when they were received (a separate RECEIVED goes only when the write has to wait);
   invalid records go to the dead-letter topic with their reason and a REJECTED acknowledgement;
5. **commit** the offsets, only once every record is written or dead-lettered and every
   acknowledgement is confirmed by the broker.

When a country's local system is unavailable (or slow, or hung), only that country waits. A few
quick retries on its writer thread absorb a blip; past them the adapter *holds* that country's
batch: it pauses that country's partitions, keeps polling (so the group sees a live member and
does not rebalance, and the other countries go on), probes the system's health with backoff on
the writer thread, and finishes the batch when the system answers again.
When the broker fails us, the batch is read again from the committed offsets; writes are
idempotent and the tracker deduplicates acknowledgements, so a replay is harmless.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from kafka import KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from notice_bus.bureau.clients import open_clients
from notice_bus.bureau.flow import Flow
from notice_bus.bureau.lane import Batch, Lane, make_lanes
from notice_bus.bureau.metrics import AdapterMetrics
from notice_bus.bureau.rebalance import Rebalance
from notice_bus.bureau.sinks.sink import Sink
from notice_bus.bureau.writers import Writers
from notice_bus.errors import (
    BrokerUnavailable,
    ConfigError,
    LocalSystemUnavailable,
    TransientError,
)
from notice_bus.runtime.committer import Committer
from notice_bus.runtime.kafka import (
    corked,
    explain,
    poll_or_none,
)
from notice_bus.runtime.retry import retrying
from notice_bus.runtime.settings import Settings
from notice_bus.trust.keyring_topic import bureau_trust
from notice_bus.wire.codec import SchemaStore
from notice_bus.wire.groups import DEFAULT_HUB, group_id, hub_group_id
from notice_bus.wire.model import utcnow
from notice_bus.wire.schema_registry import KafkaSchemaStore
from notice_bus.wire.topics import TopicNames

log = logging.getLogger("notice_bus.adapter")

Clock = Callable[[], datetime]
_WRITERS = 8  # a hub's lanes writing at once: enough to overlap waits on the local systems
_BUSY_POLL_MS = 50  # how long a poll waits while lanes are writing
_REVOKE_WAIT_S = 10.0  # for the acknowledgements of finished batches, before a rebalance


class Adapter:
    """Consumes the notices of the countries of ``sinks`` (country -> its local system).

    One country uses that country's consumer group. Several use the group of ``hub`` (a name;
    by default :data:`DEFAULT_HUB`), so several instances of a hub share its work;
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
            hub = hub or DEFAULT_HUB
            label, group = f"hub-{hub}", hub_group_id(settings, hub)
        self.adapter_id = adapter_id or f"{label}@{socket.gethostname()}:{os.getpid()}"
        self.group = group
        names = TopicNames(settings.topic_prefix)
        store = schemas if schemas is not None else KafkaSchemaStore(settings)
        self._retry = retrying(settings)
        self._closed = False
        self._rewind_on_assign = from_beginning
        self._owns_producer = producer is None
        own = [t(cc) for cc in self.countries for t in (names.notices, names.reminders)]
        self._consumer, producer = open_clients(
            settings, f"notice-bus-adapter-{label}", group, own, instance_id, producer
        )
        self._producer = producer
        self._committer = Committer(self._consumer, producer)
        self.metrics = metrics or AdapterMetrics()
        self._flow = Flow(self._consumer, settings, self.metrics)
        # by topic: the notices and reminders of each country
        checker, macs = bureau_trust(settings, self.countries)
        self._lanes = make_lanes(
            sinks, producer, names, store, self.adapter_id, clock, checker, macs
        )
        self.lanes = list(dict.fromkeys(self._lanes.values()))  # one per country
        self._by_country = {lane.country: lane for lane in self.lanes}
        self._writers = Writers(min(_WRITERS, len(sinks)))
        self._jobs: dict[str, Batch] = {}  # the batch each busy lane is writing
        self._queued: dict[str, Batch] = {}  # records that came for a busy lane
        # How long a step waits for its writes before polling again: a quick write is
        # acknowledged in the same step, a slow one holds only its own lane.
        self._patience_s = settings.poll_timeout_ms / 1000
        self._consumer.subscribe(
            list(self._lanes), listener=Rebalance(self._revoked, self._assigned)
        )
        # The topics' metadata, fetched after subscribing and before joining: a leader then
        # assigns every partition at once, and kafka-python's snapshot of the subscribed
        # topics is whole. Fetched before subscribing, the snapshot stayed empty until the
        # next metadata refresh (30 s on), which then rebalanced the group mid-traffic.
        try:
            known = self._consumer.topics()
        except KafkaError as exc:
            # Only the clients: the sinks are the caller's, for the next attempt.
            if self._owns_producer:
                self._producer.close(timeout=0)
            self._consumer.close()
            raise BrokerUnavailable(
                f"cannot list topics at {settings.bootstrap_servers}: {explain(exc)}"
            ) from exc
        missing = [t for t in self._lanes if t not in known]
        if missing:
            self.close()
            raise ConfigError(
                f"topic {missing[0]} does not exist at {settings.bootstrap_servers}; run"
                f" `notice-bus topics init --countries {','.join(self.countries)}` first"
            )

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
        """Poll once, hand what came to the lanes' writers, and finish what they have done;
        returns the number of records finished. Never waits on a local system for longer
        than ``poll_timeout_ms``: a lane still writing is collected on a later step."""
        try:
            self._committer.settle(wait=False)
        except TransientError as exc:
            self._abandon(exc)
            return 0
        done = self._collect()
        self._start_due()
        # Until the group has given us partitions, poll long: kafka-python drives the
        # join's round trips only inside poll, and short polls can starve it. While lanes
        # are writing, poll briefly, so that their end is acknowledged soon.
        wait_ms = self.settings.poll_timeout_ms if self._consumer.assignment() else 2000
        if self._jobs or self._queued:
            wait_ms = min(wait_ms, _BUSY_POLL_MS)
        polled = poll_or_none(self._consumer, wait_ms, self.adapter_id)
        if polled is None:  # the broker is unreachable: nothing read, nothing to lose
            return done
        if not polled:
            if not self._jobs:
                try:
                    self._committer.settle(wait=True)  # idle: make everything durable now
                except TransientError as exc:
                    self._abandon(exc)
            return done
        batches: dict[str, Batch] = {}
        for tp, records in polled.items():
            lane = self._lanes[tp.topic]
            batches.setdefault(lane.country, Batch([])).records.extend(records)
        started = [
            cc for cc, batch in batches.items() if self._dispatch(self._by_country[cc], batch)
        ]
        self._writers.wait(started, self._patience_s)
        return done + self._collect()

    @property
    def holding(self) -> bool:
        """Whether a batch waits for a local system to come back."""
        return any(lane.held is not None for lane in self.lanes)

    def close(self) -> None:
        """Finish the writes in hand, leave the consumer group and release connections.
        Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._writers.shutdown()  # a write in hand finishes
            self._queued.clear()  # not started: read again by the next owner
            self._collect()
            self._committer.settle(wait=True)
        except TransientError as exc:
            log.warning("leaving uncommitted batches; they will be read again: %s", exc)
        try:
            self._producer.flush(timeout=10)  # a shared producer: what this adapter said, too
        finally:
            if self._owns_producer:
                self._producer.close(timeout=10)
            self._consumer.close()
            for lane in self.lanes:
                lane.sink.close()

    def _dispatch(self, lane: Lane, batch: Batch) -> bool:
        """Take a lane's new records in and start its write; returns whether it started.
        A lane still busy keeps them for when it is done (and its partitions are paused
        meanwhile); a lane holding a batch for its local system gets them back later (a
        rebalance may have resumed it)."""
        if lane.held is not None:
            self._flow.put_back(lane, batch.records)
            return False
        if self._writers.busy(lane.country):
            queued = self._queued.setdefault(lane.country, Batch([]))
            queued.records.extend(batch.records)
            self._flow.pause(lane)
            return False
        try:
            lane.take_in(batch)
        except TransientError as exc:  # a dead letter could not be sent
            log.error("%s: batch not taken in, it will be read again: %s", lane.country, exc)
            self._flow.put_back(lane, batch.records)
            self._flow.resume(lane)
            return False
        self._start(lane, batch)
        return True

    def _start(self, lane: Lane, batch: Batch, *, probe: bool = False) -> None:
        def job() -> None:
            lane.work(batch, self._flush, probe=probe)
            lane.channel.relay_responses(lane.sink)  # answers ride along when due

        self._jobs[lane.country] = batch
        self._writers.start(lane.country, job)

    def _start_due(self) -> None:
        """Start a held lane's retry when its time has come, and an idle lane's look for
        its bureau's answers when due."""
        now = time.monotonic()
        for lane in self.lanes:
            if self._writers.busy(lane.country):
                continue
            batch = lane.held
            if batch is not None:
                if now >= batch.next_try:
                    batch.attempts += 1
                    self._start(lane, batch, probe=True)
            elif lane.channel.due():
                self._jobs.pop(lane.country, None)
                self._writers.start(
                    lane.country, functools.partial(lane.channel.relay_responses, lane.sink)
                )

    def _collect(self) -> int:
        """Act on the writers' ended jobs, and start the batches that waited for them;
        returns the records finished."""
        done = 0
        finished: list[tuple[Lane, Batch]] = []
        ended = self._writers.ended()
        for country, outcome in ended:
            lane = self._by_country[country]
            batch = self._jobs.pop(country, None)
            if batch is None:  # a look for answers: it logs its own failures
                if lane.held is None:
                    self._flow.resume(lane)
                continue
            if outcome is None:
                if lane.held is batch:
                    log.info("%s: local system back after %d attempts", country, batch.attempts)
                    self._flow.release(lane)
                self._flow.resume(lane)
                finished.append((lane, batch))
                done += len(batch.records)
            elif isinstance(outcome, TransientError) and not isinstance(
                outcome, LocalSystemUnavailable
            ):  # the broker failed us: read the batch again
                if lane.held is batch:
                    self._flow.release(lane)
                self._read_again(lane, batch, "not done", outcome)
                self._flow.resume(lane)
            else:
                self._flow.hold(lane, batch, outcome)
        self._finish(finished)
        for country, _ in ended:
            waiting = self._queued.pop(country, None)
            if waiting is not None:
                self._dispatch(self._by_country[country], waiting)
        return done

    def _flush(self, sink: Sink) -> None:
        for attempt in self._retry:
            with attempt:
                sink.flush()

    def _finish(self, written: Sequence[tuple[Lane, Batch]]) -> None:
        """After the writes: their RECORDED acknowledgements, sent together by the poll
        thread, which has just waited for the step's writes (``_patience_s``), so a quick
        write is acknowledged in its own step. Together, they cost one wake-up of the
        producer's network thread; sent by each writer thread as it ended they cost one each,
        and that made a 196-country host use a quarter more CPU and lengthened p95 (measured
        by the propagation benchmark). The committer commits once the broker has them."""
        with corked(self._producer):
            for lane, batch in written:
                try:
                    lane.recorded(batch)
                except TransientError as exc:  # written, but HQ not told: do it again
                    self._read_again(lane, batch, "not acknowledged", exc)
                    continue

                def counted(lane: Lane = lane, batch: Batch = batch) -> None:
                    self.metrics.finished(lane.country, len(batch.recorded), batch.rejected)

                self._committer.add(batch.records, batch.said, counted)

    def _read_again(self, lane: Lane, batch: Batch, what: str, exc: Exception) -> None:
        """The broker failed ``batch``: read it, and what waited for it, again."""
        log.error("%s: batch %s, it will be read again: %s", lane.country, what, exc)
        self.metrics.errors.labels(lane.country, "broker_unavailable").inc()
        queued = self._queued.pop(lane.country, Batch([]))
        self._flow.put_back(lane, batch.records + queued.records)

    def _abandon(self, exc: Exception) -> None:
        """The broker did not confirm what finished batches said: read every uncommitted
        batch again from its first offsets (writes and acknowledgements are idempotent)."""
        first = self._committer.forget()
        for queued in self._queued.values():
            for r in queued.records:
                first.setdefault(TopicPartition(r.topic, r.partition), r.offset)
        self._queued.clear()
        log.error("batches not confirmed, %d partitions will be read again: %s", len(first), exc)
        for tp in first:
            self.metrics.errors.labels(self._lanes[tp.topic].country, "broker_unavailable").inc()
        self._flow.rewind(first)

    def _revoked(self, partitions: Sequence[TopicPartition]) -> None:
        # kafka-python runs this on the consumer's IO thread, while the polling thread waits
        # in poll(). Finished batches are committed once the broker confirms what they said
        # (waiting a little: the group's join waits for us, and the producer confirms on a
        # thread of its own), so their next owner does not write and acknowledge them again.
        # Writes still in hand are read again by the next owner: idempotent, so harmless.
        self._committer.commit_confirmed(wait_s=_REVOKE_WAIT_S)
        self._queued.clear()  # read again from the committed offsets, by whoever owns them
        for lane in {self._lanes[tp.topic] for tp in partitions if tp.topic in self._lanes}:
            if lane.held is not None:
                log.warning(
                    "%s: partitions revoked while holding a batch; its new owner re-reads it",
                    lane.country,
                )
                self._flow.release(lane)

    def _assigned(self, partitions: Sequence[TopicPartition]) -> None:
        ours = {lane.topic for lane in self.lanes}
        notices = [tp for tp in partitions if tp.topic in ours]
        if self._rewind_on_assign and notices:
            log.info("reading %d partitions from the beginning", len(notices))
            self._consumer.seek_to_beginning(*notices)
            self._rewind_on_assign = False
