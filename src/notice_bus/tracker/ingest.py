"""HQ's tracker: learns what was sent to every country and what every country made of it.

It reads every country's notices topic (what HQ delivered), acks topic (what the adapter
did, and its copy checks: :mod:`notice_bus.tracker.copies`), responses topic (what the bureau
answered) and decisions topic (HQ's word on the bureau's requests,
:mod:`notice_bus.tracker.requests`), found by name every few seconds, so
countries added later are picked up, and stores them in its database. These topics date
records with the broker's clock (LogAppendTime), which the report prefers to any bureau's
clock. Every ``sample_interval_s`` it also samples the countries' consumer groups from the
broker side and runs the escalation hook.

Nothing read can stop it: a record that does not decode, or whose fields do not fit (an id
that is not a notice id, a version out of range, an unknown status), is quarantined on its
own, in ``tracker_quarantine`` with its bytes, its position and why, and logged at ERROR;
the rest of its batch is stored. Should the database still refuse a batch, its records are
stored one by one, and only the refused ones are quarantined.

Where bureaus MAC their acknowledgements and answers (``ack_master_file`` set), every record
of an acks or responses topic is checked before it is read: one that fails (no MAC, another
bureau's, altered) is never counted as a delivery or an answer, but stored as a security event
in ``tracker_security_event``, with its bytes and why, and logged at ERROR. Notices are not
checked here: HQ wrote them, and the adapters check its signatures.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from sqlalchemy import delete, func, insert, literal, select, union_all

from notice_bus.errors import (
    ConfigError,
    LocalSystemRejected,
    NoticeBusError,
    TransientError,
)
from notice_bus.runtime.committer import Committer
from notice_bus.runtime.db import as_utc, dialect_insert, make_engine, transaction
from notice_bus.runtime.kafka import (
    FETCH_WAIT_MS,
    connecting,
    kafka_config,
    keep_trying,
    poll_or_none,
    unreachable,
)
from notice_bus.runtime.retry import retrying
from notice_bus.runtime.settings import Settings
from notice_bus.runtime.workers import shard_of
from notice_bus.tracker.copies import store_checks
from notice_bus.tracker.group_health import GroupProbe, Sample, Waiting
from notice_bus.tracker.reconcile import Row, store
from notice_bus.tracker.requests import store_decisions
from notice_bus.tracker.rows import FORGED, UNREADABLE, quarantined, rows_of, security_event
from notice_bus.tracker.tables import (
    GROUP_SAMPLE,
    QUARANTINE,
    SECURITY_EVENT,
    SENT,
    TRACKER_TABLES,
)
from notice_bus.trust.ack_mac import AckVerifier
from notice_bus.trust.keys import read_secret
from notice_bus.wire.codec import AvroCodec, SchemaStore, load_schema, projection
from notice_bus.wire.groups import group_id, hub_group_id
from notice_bus.wire.manifest import CHECK, kind_of
from notice_bus.wire.model import utcnow
from notice_bus.wire.schema_registry import KafkaSchemaStore
from notice_bus.wire.topics import TopicNames

log = logging.getLogger("notice_bus.tracker")
_KEEP_SAMPLES = timedelta(days=1)
_NOTICE_FIELDS = ("notice_id", "version", "action", "published_at")
_LOOK_EVERY_S = 3.0  # how soon a new country's topics are read
_PLAIN = ("decisions", "copies")  # kinds stored by a plain upsert of their own
Rows = dict[str, list[Row]]
Parsed = tuple[Any, str, list[Row]]  # a record, its kind, its rows
Bad = list[dict[str, Any]]  # rows of tracker_quarantine or of tracker_security_event


class Tracker:
    """``on_sample`` is called after every sampling round (the escalation hook).

    With ``shards`` above one, this tracker is one of that many workers, each in its own
    process and reading the topics of the countries :func:`shard_of` gives it; worker 0 also
    samples every country's consumer group and runs the hook."""

    def __init__(
        self,
        settings: Settings,
        *,
        database_url: str | None = None,
        schemas: SchemaStore | None = None,
        clock: Callable[[], datetime] = utcnow,
        on_sample: Callable[[], None] | None = None,
        shard: int = 0,
        shards: int = 1,
    ) -> None:
        if not 0 <= shard < shards:
            raise ConfigError(f"tracker worker {shard} of {shards} does not exist")
        self.shard, self.shards = shard, shards
        self.settings = settings
        # Read before the database is opened: a bad key file stops the start, leaking nothing.
        master = settings.ack_master_file
        self._verifier = AckVerifier(read_secret(master)) if master else None
        self.engine = make_engine(database_url or settings.tracker_database_url, TRACKER_TABLES)
        self._quarantine = dialect_insert(self.engine)(QUARANTINE).on_conflict_do_nothing()
        self._security = dialect_insert(self.engine)(SECURITY_EVENT).on_conflict_do_nothing()
        self._names = TopicNames(settings.topic_prefix)
        self._clock = clock
        self.on_sample = on_sample
        self._schemas = schemas if schemas is not None else KafkaSchemaStore(settings)
        self._retry = retrying(settings)
        self._probe = GroupProbe(
            settings, lambda cc: group_id(settings, cc), hub_group_id(settings, "")
        )
        self._next_sample = 0.0
        self._connected = False  # see connect()
        prefix = re.escape(settings.topic_prefix)
        self._ours = re.compile(f"^{prefix}(notices|acks|responses|decisions)\\.[A-Z]{{2}}$")
        self._topics: set[str] = set()  # the ones this worker reads
        self._countries: set[str] = set()  # every country's, for sampling
        self._next_look = 0.0

    # Made by connect(), not in __init__: a tracker comes up, database and all, without a
    # broker, and waits for one.
    _consumer: KafkaConsumer
    _committer: Committer
    _codecs: dict[str, AvroCodec]

    def connect(self, stop: threading.Event | None = None) -> bool:
        """Connect to the cluster unless connected already. Without ``stop``, one attempt,
        which raises BrokerUnavailable when no broker answers within ``broker_timeout_s``
        (:meth:`step` makes it when needed). With ``stop``, attempts with backoff, each failure
        logged (see :func:`~notice_bus.runtime.kafka.keep_trying`), until one succeeds (True) or
        ``stop`` is set (False)."""
        if self._connected:
            return True
        if stop is None:
            connecting(self.settings)
            consumer = self._open()
        else:
            what = "tracker" if self.shards == 1 else f"tracker {self.shard + 1}-of-{self.shards}"
            consumer = keep_trying(self.settings, what, self._open, stop)
            if consumer is None:
                return False
        self._consumer = consumer
        self._committer = Committer(consumer, None)
        self._connected = True
        return True

    def _open(self) -> KafkaConsumer:
        """One attempt: the codecs (registering the schemas the tracker knows) and the
        consumer."""
        store = self._schemas
        self._codecs = {
            "notices": AvroCodec(
                projection(load_schema("notice_event"), _NOTICE_FIELDS), store, reader_only=True
            ),
            "acks": AvroCodec(load_schema("ack"), store),
            "responses": AvroCodec(load_schema("response"), store),
            "decisions": AvroCodec(load_schema("request_decision"), store),
            "copies": AvroCodec(load_schema("copy_check"), store),  # on acks topics
        }
        try:
            return KafkaConsumer(
                **kafka_config(self.settings, "notice-bus-tracker"),
                group_id=f"{self.settings.topic_prefix}notice-bus.tracker",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
                max_poll_records=5000,
                fetch_max_wait_ms=FETCH_WAIT_MS,
            )
        except KafkaError as exc:
            raise unreachable(self.settings, exc) from exc

    def run(self, stop: threading.Event) -> None:
        """Track until ``stop`` is set; without a broker, wait for one (see :meth:`connect`)."""
        try:
            if not self.connect(stop):
                return
            while not stop.is_set():
                self.step()
                if self.shard == 0 and time.monotonic() >= self._next_sample:
                    self._next_sample = time.monotonic() + self.settings.sample_interval_s
                    self.sample()
        finally:
            self.close()

    def step(self) -> int:
        """Read a batch, store it and commit its offsets; returns how many records it had."""
        self.connect()
        if time.monotonic() >= self._next_look:
            self._next_look = time.monotonic() + _LOOK_EVERY_S
            self._take_new_topics()
        batch = poll_or_none(self._consumer, self.settings.poll_timeout_ms, "tracker")
        if batch is None:
            return 0
        records = [r for part in batch.values() for r in part]
        try:
            if not records:
                self._committer.settle(wait=True)  # idle: make sure of the last commit
                return 0
            self._store(*self._rows_of(records))
            # Asynchronous: the next batch need not wait for the broker, and a commit lost
            # only means the batch is read again, which stores nothing twice.
            self._committer.add(records, (), lambda: None)
            self._committer.settle(wait=False)
        except (TransientError, KafkaError) as exc:
            log.error("tracker: batch not stored, it will be read again: %s", exc)
            for tp, part in batch.items():
                self._consumer.seek(tp, part[0].offset)
            return 0
        return len(records)

    def _take_new_topics(self) -> None:
        """Assign every partition of the countries' topics, new ones included. The tracker
        assigns rather than subscribes: it is HQ's only reader of these topics, and a
        subscription by pattern rejoins its group whenever a topic appears, a join that
        kafka-python was seen to leave hanging (the tracker then read nothing at all)."""
        try:
            ours = [t for t in self._consumer.topics() if self._ours.match(t)]
        except KafkaError as exc:
            log.warning("tracker: cannot list topics, keeping %d: %s", len(self._topics), exc)
            return
        countries = {t: self._names.country_of(t) or "" for t in ours}
        self._countries = set(countries.values())
        topics = {t for t, cc in countries.items() if shard_of(cc, self.shards) == self.shard}
        wanted = [
            TopicPartition(t, p)
            for t in sorted(topics)
            for p in sorted(self._consumer.partitions_for_topic(t) or ())
        ]
        if set(wanted) != self._consumer.assignment():
            self._consumer.assign(wanted)  # positions: committed offsets, else the earliest
        self._topics = topics

    def sample(self) -> dict[str, Sample]:
        """Sample every known country's consumer group, store the samples, run the hook."""
        countries = sorted(self._countries)
        now = self._clock()
        try:
            samples = self._probe.sample(countries, self._oldest_waiting, now)
            with transaction(self.engine) as conn:
                if samples:
                    conn.execute(
                        insert(GROUP_SAMPLE),
                        [
                            {
                                "country": cc,
                                "at": s.at,
                                "end_offset": s.end_offset,
                                "committed": s.committed,
                                "members": s.members,
                                "time_lag_s": s.time_lag_s,
                            }
                            for cc, s in samples.items()
                        ],
                    )
                conn.execute(delete(GROUP_SAMPLE).where(GROUP_SAMPLE.c.at < now - _KEEP_SAMPLES))
        except NoticeBusError as exc:
            log.error("tracker: consumer groups not sampled: %s", exc)
            return {}
        if self.on_sample is not None:
            try:
                self.on_sample()
            except NoticeBusError as exc:
                log.error("tracker: escalation failed, it runs again next round: %s", exc)
        return samples

    def close(self) -> None:
        if self._connected:
            try:
                self._committer.settle(wait=True)
            except (NoticeBusError, KafkaError) as exc:
                log.warning("tracker: last offsets not committed, they will be read again: %s", exc)
            self._consumer.close()
        self._probe.close()
        self.engine.dispose()

    def _oldest_waiting(self, waiting: Sequence[Waiting]) -> dict[tuple[str, int], datetime | None]:
        """One query for every partition (a union of index lookups), in chunks: SQLite allows
        500 terms to a compound SELECT."""
        found: dict[tuple[str, int], datetime | None] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(waiting), 400):
                parts = []
                for country, partition, committed in waiting[i : i + 400]:
                    query = select(
                        literal(country).label("country"),
                        literal(partition).label("partition"),
                        func.min(SENT.c.broker_at).label("oldest"),
                    ).where(SENT.c.country == country, SENT.c.partition == partition)
                    if committed is not None:
                        query = query.where(SENT.c.offset >= committed)
                    parts.append(query)
                for country, partition, oldest in conn.execute(union_all(*parts)):
                    found[country, partition] = as_utc(oldest) if oldest is not None else None
        return found

    def _store(self, parsed: Sequence[Parsed], bad: Bad, forged: Bad) -> None:
        """Store a batch's rows, its quarantined records and its security events; if the
        database refuses the batch for good, store its records one by one and quarantine the
        refused ones."""
        rows: Rows = {"notices": [], "acks": [], "responses": [], "decisions": [], "copies": []}
        for _, kind, its in parsed:
            rows[kind] += its
        try:
            self._store_now(rows, bad, forged)
            return
        except LocalSystemRejected as exc:
            log.error("tracker: batch refused, storing its records one by one: %s", exc)
        for r, kind, its in parsed:
            try:
                self._store_now({kind: its}, [], [])
            except LocalSystemRejected as exc:
                bad.append(quarantined(r, f"refused by the tracker's database: {exc}"))
        try:
            self._store_now({}, bad, forged)
        except LocalSystemRejected as exc:  # logged one by one already; never stop on input
            log.error(
                "tracker: %d quarantined records and %d security events not stored either: %s",
                len(bad),
                len(forged),
                exc,
            )

    def _store_now(self, rows: Rows, bad: Bad, forged: Bad) -> None:
        for attempt in self._retry:
            with attempt, transaction(self.engine) as conn:
                # Decisions and copy checks are few: plain upserts, not the stages of the rest.
                store(conn, **{k: v for k, v in rows.items() if k not in _PLAIN})
                store_decisions(conn, rows.get("decisions", ()))
                store_checks(conn, rows.get("copies", ()))
                if bad:
                    conn.execute(self._quarantine, bad)
                if forged:
                    conn.execute(self._security, forged)

    def _rows_of(self, records: Sequence[Any]) -> tuple[list[Parsed], Bad, Bad]:
        """The batch's rows, its records to quarantine, and its security events."""
        parsed: list[Parsed] = []
        bad: Bad = []
        forged: Bad = []
        for r in records:
            kind = r.topic[len(self._names.prefix) :].split(".", 1)[0]
            country = self._names.country_of(r.topic)
            if self._verifier is not None and kind in FORGED:
                # Before decoding: what a bureau did not write is not read, whatever it says.
                why = self._verifier.check(country or "", r.key, r.value, r.headers)
                if why is not None:
                    forged.append(security_event(r, kind, country or "", why))
                    continue
            if kind == "acks" and kind_of(r.headers) == CHECK:
                kind = "copies"  # a copy check, never an acknowledgement
            try:
                parsed.append((r, kind, self._rows(kind, country, r)))
            except UNREADABLE as exc:
                # The adapter dead-letters bad notices and says so in a REJECTED ack; a bad
                # ack or answer can only be reported, and kept, here.
                bad.append(quarantined(r, str(exc)))
        return parsed, bad, forged

    def _rows(self, kind: str, country: str | None, r: Any) -> list[Row]:
        """The rows of one record; raises one of UNREADABLE for a record to quarantine."""
        return rows_of(kind, country, self._codecs[kind].decode(r.value), r)
