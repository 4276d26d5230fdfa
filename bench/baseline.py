"""The floor: bare kafka-python doing what a propagation run does, with none of notice-bus.

One producer sends a notice-sized payload (1,200 random bytes) to every country's notices topic
(a topic layout identical to ours, under another prefix), with acks=all as HQ's; one consumer
reads them all and produces a small reply to each country's acks topic. A notice's latency in a
country is the reply's broker append time minus the time just before the send, as ours is.

:func:`raw_session` gives it the interface of a propagation
:class:`~bench.propagation.Session` (``warm_up``, ``publish`` in blocks, ``latencies``), so that
the benchmark can alternate its blocks with notice-bus's own, both meeting the same machine.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from bench.cluster import Cluster
from bench.latencies import Latencies
from bench.propagation import AckWatch, latencies, paced, run_topics, warm_up
from notice_bus.runtime.kafka import kafka_config
from notice_bus.runtime.settings import Settings
from notice_bus.wire.topics import TopicNames

PAYLOAD_BYTES = 1200  # about an encoded notice


class RawSession:
    """The baseline's deployment, ready for timed notices (see :func:`raw_session`)."""

    def __init__(
        self,
        settings: Settings,
        label: str,
        countries: Sequence[str],
        producer: KafkaProducer,
        watch: AckWatch,
    ) -> None:
        self.settings = settings
        self.label = label
        self.countries = countries
        self.watch = watch
        self._producer = producer
        self._names = TopicNames(settings.topic_prefix)
        self._payload = os.urandom(PAYLOAD_BYTES)
        self._early = 0
        self.sent: dict[str, float] = {}  # when each timed send began
        self.blocks: list[list[str]] = []  # the notice ids of each publish block

    def send(self, notice_id: str) -> set[tuple[str, str]]:
        """One notice to every country, confirmed by the broker (as HQ's publish is)."""
        for c in self.countries:
            self._producer.send(self._names.notices(c), key=notice_id.encode(), value=self._payload)
        self._producer.flush()
        return {(c, notice_id) for c in self.countries}

    def warm_up(self, count: int, rate: float) -> Latencies:
        """``count`` untimed notices at ``rate`` (see :func:`bench.propagation.warm_up`)."""
        sent: dict[str, float] = {}

        def publish(i: int) -> set[tuple[str, str]]:
            nid = f"raw/early/{self._early + i}"
            sent[nid] = time.time()
            return self.send(nid)

        warm_up(publish, self.watch, count, rate)
        self._early += count
        return latencies(sent, self.watch, self.countries)

    def publish(self, count: int, rate: float) -> None:
        """The next ``count`` notices at ``rate``, timed."""
        first = len(self.sent)
        block = [f"raw/{first + i}" for i in range(count)]
        for i in paced(count, rate):
            self.sent[block[i]] = time.time()
            self.send(block[i])
        self.blocks.append(block)

    def latencies(self, notice_ids: Sequence[str] | None = None) -> Latencies:
        sent = self.sent if notice_ids is None else {n: self.sent[n] for n in notice_ids}
        return latencies(sent, self.watch, self.countries)

    def result(self) -> Latencies:
        """Waits (up to 120 s) for every timed notice's reply from every country."""
        left = self.watch.wait_for({(c, n) for c in self.countries for n in self.sent}, 120)
        if left:
            raise RuntimeError(f"{self.label}: {len(left)} replies never came back")
        return self.latencies()


@contextmanager
def raw_session(
    cluster: Cluster, countries: Sequence[str], tmp: Path, label: str = "raw"
) -> Iterator[RawSession]:
    """The baseline for ``countries`` on ``cluster``: its topics, its relay (a thread of this
    process) and its producer, once a first notice has gone round every country untimed (both
    clients then know every topic's metadata, as our adapters do when a run starts)."""
    with run_topics(cluster, tmp, label, countries) as settings:
        names = TopicNames(settings.topic_prefix)
        watch = AckWatch(settings, countries, decode=False)
        stop, ready = threading.Event(), threading.Event()

        def relay() -> None:
            consumer = KafkaConsumer(
                **kafka_config(settings, "raw-relay"), enable_auto_commit=False
            )
            producer = KafkaProducer(**kafka_config(settings, "raw-relay"), linger_ms=5)
            tps = [TopicPartition(names.notices(c), 0) for c in countries]
            consumer.assign(tps)
            consumer.seek_to_end()
            for tp in tps:
                consumer.position(tp)
            ready.set()
            while not stop.is_set():
                for records in consumer.poll(timeout_ms=200).values():
                    for r in records:
                        cc = names.country_of(r.topic) or ""
                        producer.send(names.acks(cc), key=r.key, value=b"RECORDED")
                producer.flush()
            producer.close()
            consumer.close()

        thread = threading.Thread(target=relay, daemon=True)
        thread.start()
        producer = KafkaProducer(**kafka_config(settings, "raw-hq"), linger_ms=5, acks="all")
        try:
            if not ready.wait(60):
                raise RuntimeError(f"{label}: the relay did not start")
            session = RawSession(settings, label, countries, producer, watch)
            if watch.wait_for(session.send("raw/first"), 300):
                raise RuntimeError(f"{label}: the relay never answered the first round")
            yield session
        finally:
            stop.set()
            thread.join(30)
            producer.close()
            watch.close()


def run_baseline(
    cluster: Cluster,
    countries: Sequence[str],
    notices: int,
    rate: float,
    tmp: Path,
    *,
    warmup: int = 0,
) -> Latencies:
    """The baseline on its own: ``warmup`` untimed notices, then ``notices`` timed."""
    with raw_session(cluster, countries, tmp) as session:
        session.warm_up(warmup, rate)
        session.publish(notices, rate)
        return session.result()
