"""Propagation latency: HQ's publish call -> the RECORDED acknowledgement back at HQ.

One run = a fresh set of topics for N countries, a host process running the N adapters
(`notice-bus adapter --country A,B,...`) into SQLite files or PostgreSQL databases, and HQ
publishing notices addressed to every country at a steady rate. A notice's latency in a
country is the broker's append time of that country's RECORDED acknowledgement (acks topics
are LogAppendTime: the time it reached HQ's Kafka) minus the wall-clock time just before
HQ's ``publish`` call (same machine, same clock). HQ's outbox, the broker, the adapter's
decode/validate/write/acknowledge/commit and the acknowledgement's trip are all inside it.

The floor, bare kafka-python on the same broker and timed the same way, is
:mod:`bench.baseline`'s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from bench.cluster import Cluster
from bench.common import drop_topics, say, tree_peak_rss_mb
from bench.latencies import Latencies
from notice_bus.hq.generate import make_drafts
from notice_bus.hq.publisher import HQ
from notice_bus.runtime.kafka import kafka_config
from notice_bus.runtime.settings import Settings
from notice_bus.trust.cluster import init_cluster
from notice_bus.wire.codec import AvroCodec, load_schema
from notice_bus.wire.model import AckStatus
from notice_bus.wire.schema_registry import KafkaSchemaStore
from notice_bus.wire.topics import TopicNames
from notice_bus.wire.validation import Draft


class AckWatch:
    """Reads every acks topic of a prefix and keeps the broker time of each RECORDED ack
    (or of every reply, for the raw baseline): {(country, notice_id): seconds}. It shares
    the machine with what it measures, so it reads nothing else."""

    def __init__(self, settings: Settings, countries: Sequence[str], decode: bool) -> None:
        names = TopicNames(settings.topic_prefix)
        self._topics = {names.acks(c): c for c in countries}
        self._codec = AvroCodec(load_schema("ack"), KafkaSchemaStore(settings)) if decode else None
        self.seen: dict[tuple[str, str], float] = {}
        self._consumer = KafkaConsumer(
            **kafka_config(settings, "bench-acks"), enable_auto_commit=False
        )
        tps = [TopicPartition(t, p) for t in self._topics for p in range(settings.partitions)]
        self._consumer.assign(tps)
        self._consumer.seek_to_end()
        for tp in tps:  # resolve the positions now, before anything is published
            self._consumer.position(tp)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for records in self._consumer.poll(timeout_ms=200).values():
                for r in records:
                    country = self._topics[r.topic]
                    ids = [r.key.decode()]
                    if self._codec is not None:
                        ack = self._codec.decode(r.value)
                        if ack["status"] != AckStatus.RECORDED.value:
                            continue
                        ids += [e["notice_id"] for e in ack["also"]]
                    for notice_id in ids:
                        self.seen.setdefault((country, notice_id), r.timestamp / 1000)

    def wait_for(self, keys: set[tuple[str, str]], timeout_s: float) -> set[tuple[str, str]]:
        """Waits until every key is seen; returns the ones still missing."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not keys <= self.seen.keys():
            time.sleep(0.2)
        return keys - self.seen.keys()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


def paced(count: int, rate: float) -> Iterator[int]:
    """0..count-1, the i-th no earlier than i/rate seconds after the first."""
    start = time.monotonic()
    for i in range(count):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield i


def latencies(
    sent: dict[str, float],
    watch: AckWatch,
    countries: Sequence[str],
    calls: dict[str, float] | None = None,
) -> Latencies:
    """``sent``: when each publish call began; ``calls``: how long each took."""
    out = Latencies()
    if calls:
        out.hq = list(calls.values())
    for cc in countries:
        for nid, at in sent.items():
            done = watch.seen.get((cc, nid))
            if done is None:
                continue
            out.by_country[cc].append(done - at)
            if calls and nid in calls:
                out.adapter.append(done - at - calls[nid])
    for nid, at in sent.items():
        waits = [watch.seen[(cc, nid)] - at for cc in countries if (cc, nid) in watch.seen]
        if waits:
            out.timeline.append((at, max(waits)))
    return out


@contextmanager
def run_topics(
    cluster: Cluster, tmp: Path, label: str, countries: Sequence[str]
) -> Iterator[Settings]:
    """A run's settings (admin's, on a secured cluster), under a prefix of its own, with its
    countries' topics, and on a secured cluster the schemas and the grants for that prefix."""
    settings = cluster.settings(
        "admin",
        topic_prefix=f"b{uuid.uuid4().hex[:6]}.{label}.",
        partitions=1,  # a country's traffic fits one partition many times over
        hq_database_url=f"sqlite:///{tmp}/hq-{label}.db",
    )
    # 196 countries' 1,570 topics, three replicas each, may take a loaded machine longer to
    # make ready than a client's usual patience (broker_timeout_s; kafka-python waits 10 s
    # for new topics' leaders, then topics init tries again).
    init_cluster(settings.with_(broker_timeout_s=max(settings.broker_timeout_s, 120)), countries)
    try:
        yield settings
    finally:
        drop_topics(settings)


@contextmanager
def host_process(
    cluster: Cluster,
    settings: Settings,
    countries: Sequence[str],
    url_template: str,
    log: Path,
    processes: int,
) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        **cluster.host_env(),
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "NOTICE_BUS_TOPIC_PREFIX": settings.topic_prefix,
        "NOTICE_BUS_PARTITIONS": str(settings.partitions),
    }
    cmd = [sys.executable, "-m", "notice_bus.cli", "adapter", "--country", ",".join(countries)]
    cmd += cluster.host_args()
    if processes > 1:
        cmd += ["--processes", str(processes)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [*cmd, "--database-url", url_template], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class RunResult:
    countries: int
    processes: int
    latencies: Latencies
    rss_mb: float
    missing: int
    #: What ``inspect`` read from the run's topics once its notices were answered.
    facts: dict[str, Any] = field(default_factory=dict)


def warm_up(
    publish: Callable[[int], set[tuple[str, str]]], watch: AckWatch, count: int, rate: float
) -> None:
    """``count`` notices at ``rate``, untimed, each answered before the timing starts.

    A run meets topics made for it, and the broker's first seconds of traffic on new topics
    held single produce requests for 1-3 s here (once per run, some 6 and 14 s in; on the
    baseline's topics too). A deployment's topics live for years, so the figures are of
    the traffic after that.
    """
    wanted: set[tuple[str, str]] = set()
    for i in paced(count, rate):
        wanted |= publish(i)
    if watch.wait_for(wanted, 300):
        raise RuntimeError("the warm-up notices were never all answered")


class Session:
    """One deployment serving ``countries``, ready for timed notices: its topics, its host
    of adapters, HQ, and the watch on its acks topics (see :func:`adapters`). Timed notices
    go out in one or more :meth:`publish` blocks; :meth:`result` waits for every one.
    ``settings``: the run's, as admin."""

    def __init__(
        self,
        settings: Settings,
        label: str,
        countries: Sequence[str],
        processes: int,
        hq: HQ,
        watch: AckWatch,
        proc: subprocess.Popen[bytes],
        drafts: list[Draft],
    ) -> None:
        self.settings = settings
        self.label = label
        self.countries = countries
        self.processes = processes
        self.hq = hq
        self.watch = watch
        self.proc = proc
        self._drafts = drafts
        self.sent: dict[str, float] = {}  # when each timed publish call began
        self.calls: dict[str, float] = {}  # how long it took
        self.blocks: list[list[str]] = []  # the notice ids of each publish block

    def warm_up(self, count: int, rate: float) -> Latencies:
        """``count`` notices at ``rate``, not counted in the figures (see :func:`warm_up`);
        their latencies, to show what the warm-up absorbed."""
        early, self._drafts = self._drafts[:count], self._drafts[count:]
        sent: dict[str, float] = {}

        def publish(i: int) -> set[tuple[str, str]]:
            sent[early[i].notice_id] = time.time()
            self.hq.publish([early[i]])
            return {(c, early[i].notice_id) for c in self.countries}

        warm_up(publish, self.watch, count, rate)
        return latencies(sent, self.watch, self.countries)

    def publish(self, count: int, rate: float) -> None:
        """The next ``count`` notices at ``rate``, timed, one publish call each."""
        block, self._drafts = self._drafts[:count], self._drafts[count:]
        if len(block) < count:
            raise RuntimeError(f"{self.label}: only {len(block)} of {count} notices left")
        for i in paced(len(block), rate):
            nid = block[i].notice_id
            self.sent[nid] = time.time()
            self.hq.publish([block[i]])
            self.calls[nid] = time.time() - self.sent[nid]
        self.blocks.append([d.notice_id for d in block])

    def latencies(self, notice_ids: Sequence[str] | None = None) -> Latencies:
        """Of the timed notices answered so far (of ``notice_ids`` only, if given)."""
        sent = self.sent if notice_ids is None else {n: self.sent[n] for n in notice_ids}
        return latencies(sent, self.watch, self.countries, self.calls)

    def result(
        self, inspect: Callable[[Settings, Sequence[str]], dict[str, Any]] | None = None
    ) -> RunResult:
        """Waits (up to 120 s) for every timed notice's RECORDED in every country; then
        ``inspect`` reads the run's topics (its settings, its countries), untimed, before they
        are dropped: what it returns is the result's ``facts``."""
        wanted = {(c, nid) for c in self.countries for nid in self.sent}
        left = self.watch.wait_for(wanted, 120)
        rss = tree_peak_rss_mb(self.proc.pid)
        facts = inspect(self.settings, self.countries) if inspect is not None else {}
        return RunResult(
            len(self.countries), self.processes, self.latencies(), rss, len(left), facts
        )


@contextmanager
def adapters(
    cluster: Cluster,
    countries: Sequence[str],
    url_template: str,
    notices: int,
    tmp: Path,
    label: str,
    *,
    processes: int = 1,
    warmup: int = 0,
) -> Iterator[Session]:
    """A fresh deployment of ``countries`` on ``cluster``, served by one host in
    ``processes`` processes, once every adapter has recorded a first notice: a session with
    ``warmup`` + ``notices`` notices to send. Its topics are dropped on the way out."""
    with run_topics(cluster, tmp, label, countries) as settings:
        watch = AckWatch(settings, countries, decode=True)
        drafts = make_drafts(notices + warmup + 1, seed=len(countries), first_number=50000)
        log = tmp / f"{label}.log"
        try:
            with (
                HQ(cluster.as_("hq", settings)) as hq,
                host_process(cluster, settings, countries, url_template, log, processes) as proc,
            ):
                # A first notice everyone must record: every adapter is up and in its group.
                began = time.monotonic()
                warm = drafts.pop(0)
                hq.publish([warm])
                missing = watch.wait_for({(c, warm.notice_id) for c in countries}, 300)
                if missing:
                    raise RuntimeError(
                        f"{label}: {len(missing)} countries never recorded the first notice"
                    )
                say(f"  {label}: {len(countries)} countries up in {time.monotonic() - began:.0f} s")
                yield Session(settings, label, countries, processes, hq, watch, proc, drafts)
        finally:
            watch.close()
        if proc.returncode not in (0, -15):
            raise RuntimeError(f"{label}: host exited with {proc.returncode}; see {log}")


def run_adapters(
    cluster: Cluster,
    countries: Sequence[str],
    url_template: str,
    notices: int,
    rate: float,
    tmp: Path,
    label: str,
    *,
    processes: int = 1,
    warmup: int = 0,
) -> RunResult:
    """Publish ``notices`` at ``rate`` to ``countries`` served by one host, in ``processes``
    processes, after ``warmup`` untimed notices (see :func:`warm_up`)."""
    with adapters(
        cluster, countries, url_template, notices, tmp, label,
        processes=processes, warmup=warmup,
    ) as session:  # fmt: skip
        session.warm_up(warmup, rate)
        session.publish(notices, rate)
        return session.result()


def alternate(sessions: Sequence[Any], sizes: Sequence[int], rate: float) -> dict[str, list[Any]]:
    """Timed notices in blocks of ``sizes``, each block sent by every session in turn at
    ``rate``, the order reversed every other block (A B, B A, A B, ...), the others idle
    meanwhile: all meet the machine, its load drifting, alike, and each meets the broker's
    once-per-run hold on new topics once, as a run of its own would. Returns each session's
    (by label) load averages at the start of its blocks."""
    loads: dict[str, list[Any]] = {s.label: [] for s in sessions}
    for i, size in enumerate(sizes):
        for session in sessions if i % 2 == 0 else list(reversed(sessions)):
            loads[session.label].append([round(x, 2) for x in os.getloadavg()])
            session.publish(size, rate)
    return loads


def blocks_of(total: int, blocks: int) -> list[int]:
    """``total`` notices in ``blocks`` blocks as even as can be (at most ``total`` blocks)."""
    n = max(1, min(blocks, total))
    return [total // n + (1 if i < total % n else 0) for i in range(n)]
