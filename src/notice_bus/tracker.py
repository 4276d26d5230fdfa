"""HQ's tracker: learns what was sent to every country and what every country made of it.

It reads every country's notices topic (what HQ delivered), acks topic (what the adapter
did) and responses topic (what the bureau answered), found by name every few seconds, so
countries added later are picked up, and stores them in its database. These topics date
records with the broker's clock (LogAppendTime), which the report prefers to any bureau's
clock. Every ``sample_interval_s`` it also samples the countries' consumer groups from the
broker side and runs the escalation hook.

Nothing read can stop it: a record that does not decode, or whose fields do not fit (an id
that is not a notice id, a version out of range, an unknown status), is quarantined on its
own, in ``tracker_quarantine`` with its bytes, its position and why, and logged at ERROR;
the rest of its batch is stored. Should the database still refuse a batch, its records are
stored one by one, and only the refused ones are quarantined.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from sqlalchemy import delete, func, insert, literal, select, union_all

from notice_bus.codec import AvroCodec, SchemaStore, load_schema, projection
from notice_bus.committer import Committer
from notice_bus.db import as_utc, dialect_insert, make_engine, transaction
from notice_bus.errors import (
    BrokerUnavailable,
    ConfigError,
    InvalidNotice,
    LocalSystemRejected,
    NoticeBusError,
    SchemaError,
    TransientError,
)
from notice_bus.group_health import GroupProbe, Sample, Waiting
from notice_bus.groups import group_id, hub_group_id
from notice_bus.model import AckStatus, Action, Answer, utcnow
from notice_bus.reconcile import Row, store
from notice_bus.retry import retrying
from notice_bus.schema_registry import KafkaSchemaStore
from notice_bus.settings import Settings
from notice_bus.tables import ACK, GROUP_SAMPLE, QUARANTINE, RESPONSE, SENT, TRACKER_TABLES
from notice_bus.topics import TopicNames, kafka_config, poll_or_none
from notice_bus.validation import NOTICE_ID
from notice_bus.workers import shard_of

log = logging.getLogger("notice_bus.tracker")
_KEEP_SAMPLES = timedelta(days=1)
_NOTICE_FIELDS = ("notice_id", "version", "action", "published_at")
_LOOK_EVERY_S = 3.0  # how soon a new country's topics are read
_INT32 = 2**31 - 1  # versions are Avro ints, and so are their columns
_ACTIONS = frozenset(a.value for a in Action)
_ANSWERS = frozenset(a.value for a in Answer)
_REASON_KEPT = 1000  # characters of a quarantine reason
Rows = dict[str, list[Row]]
Parsed = tuple[Any, str, list[Row]]  # a record, its kind, its rows
# What decoding and checking a record may raise (times out of range: OverflowError).
_UNREADABLE = (InvalidNotice, SchemaError, KeyError, ValueError, TypeError, OverflowError)


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
        self.engine = make_engine(database_url or settings.tracker_database_url, TRACKER_TABLES)
        self._quarantine = dialect_insert(self.engine)(QUARANTINE).on_conflict_do_nothing()
        self._names = TopicNames(settings.topic_prefix)
        self._clock = clock
        self.on_sample = on_sample
        store = schemas if schemas is not None else KafkaSchemaStore(settings)
        self._codecs = {
            "notices": AvroCodec(
                projection(load_schema("notice_event"), _NOTICE_FIELDS), store, reader_only=True
            ),
            "acks": AvroCodec(load_schema("ack"), store),
            "responses": AvroCodec(load_schema("response"), store),
        }
        self._retry = retrying(settings)
        self._probe = GroupProbe(
            settings, lambda cc: group_id(settings, cc), hub_group_id(settings, "")
        )
        self._next_sample = 0.0
        try:
            self._consumer = KafkaConsumer(
                **kafka_config(settings, "notice-bus-tracker"),
                group_id=f"{settings.topic_prefix}notice-bus.tracker",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
                max_poll_records=5000,
            )
        except KafkaError as exc:
            raise BrokerUnavailable(
                f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}"
            ) from exc
        self._committer = Committer(self._consumer, None)
        prefix = re.escape(settings.topic_prefix)
        self._ours = re.compile(f"^{prefix}(notices|acks|responses)\\.[A-Z]{{2}}$")
        self._topics: set[str] = set()  # the ones this worker reads
        self._countries: set[str] = set()  # every country's, for sampling
        self._next_look = 0.0

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                self.step()
                if self.shard == 0 and time.monotonic() >= self._next_sample:
                    self._next_sample = time.monotonic() + self.settings.sample_interval_s
                    self.sample()
        finally:
            self.close()

    def step(self) -> int:
        """Read a batch, store it and commit its offsets; returns how many records it had."""
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
            parsed, bad = self._rows_of(records)
            self._store(parsed, bad)
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

    def _store(self, parsed: Sequence[Parsed], bad: list[dict[str, Any]]) -> None:
        """Store a batch's rows and its quarantined records; if the database refuses the batch
        for good, store its records one by one and quarantine the refused ones."""
        rows: Rows = {"notices": [], "acks": [], "responses": []}
        for _, kind, its in parsed:
            rows[kind] += its
        try:
            self._store_now(rows, bad)
            return
        except LocalSystemRejected as exc:
            log.error("tracker: batch refused, storing its records one by one: %s", exc)
        for r, kind, its in parsed:
            try:
                self._store_now({kind: its}, [])
            except LocalSystemRejected as exc:
                bad.append(self._quarantined(r, f"refused by the tracker's database: {exc}"))
        try:
            self._store_now({}, bad)
        except LocalSystemRejected as exc:  # logged one by one already; never stop on input
            log.error("tracker: %d quarantined records not stored either: %s", len(bad), exc)

    def _store_now(self, rows: Rows, bad: Sequence[dict[str, Any]]) -> None:
        for attempt in self._retry:
            with attempt, transaction(self.engine) as conn:
                store(conn, **rows)
                if bad:
                    conn.execute(self._quarantine, bad)

    def _rows_of(self, records: Sequence[Any]) -> tuple[list[Parsed], list[dict[str, Any]]]:
        parsed: list[Parsed] = []
        bad: list[dict[str, Any]] = []
        for r in records:
            kind = r.topic[len(self._names.prefix) :].split(".", 1)[0]
            country = self._names.country_of(r.topic)
            try:
                parsed.append((r, kind, self._rows(kind, country, r)))
            except _UNREADABLE as exc:
                # The adapter dead-letters bad notices and says so in a REJECTED ack; a bad
                # ack or answer can only be reported, and kept, here.
                bad.append(self._quarantined(r, str(exc)))
        return parsed, bad

    def _quarantined(self, r: Any, reason: str) -> dict[str, Any]:
        log.error("tracker: quarantined %s[%d]@%d: %s", r.topic, r.partition, r.offset, reason)
        try:
            broker_at = datetime.fromtimestamp(r.timestamp / 1000, UTC)
        except (TypeError, ValueError, OverflowError, OSError):
            broker_at = datetime.fromtimestamp(0, UTC)
        return {
            "topic": r.topic,
            "partition": r.partition,
            "offset": r.offset,
            "reason": _clean(reason)[:_REASON_KEPT],
            "broker_at": broker_at,
            "raw": r.value,
        }

    def _rows(self, kind: str, country: str | None, r: Any) -> list[Row]:
        """The rows of one record, its fields checked to fit their columns; raises
        InvalidNotice (or a decoding error) for a record to quarantine."""
        data = self._codecs[kind].decode(r.value)
        broker_at = datetime.fromtimestamp(r.timestamp / 1000, UTC)
        if kind == "notices":  # the projection: what was sent, not the person
            _notice_id(data["notice_id"])
            _version(data["version"], low=1)
            if data["action"] not in _ACTIONS:
                raise InvalidNotice(f"unknown action {data['action']!r}", field="action")
            return [
                (
                    country, data["notice_id"], data["version"], data["action"],
                    data["published_at"], broker_at, r.partition, r.offset,
                )
            ]  # fmt: skip
        if kind == "responses":
            _notice_id(data["notice_id"])
            if data["answer"] not in _ANSWERS:
                raise InvalidNotice(f"unknown answer {data['answer']!r}", field="answer")
            return [
                (
                    country, data["notice_id"], data["answer"], _text(data.get("text"), _TEXT),
                    _text(data["responder"], _RESPONDER), data["at"], broker_at,
                )
            ]  # fmt: skip
        # The topic says who answered: ACLs confine a bureau to its own acks topic. Rejected
        # records are told apart by position, so two bad records of a notice count twice.
        # (Fields straight from the decoded dict: a dataclass per ack costs more than its row.)
        status = AckStatus(data["status"])
        position = ""
        if status is AckStatus.REJECTED:
            position = f"{data['source_partition']}:{data['source_offset']}"
            if len(position) > _POSITION:
                raise InvalidNotice(f"source position {position!r} too long", field="source")
        adapter_id = _text(data["adapter_id"], _ADAPTER_ID)
        reason = _text(data.get("reason"), _REASON)
        times = [(status.value, data["at"], broker_at)]
        if status is AckStatus.RECORDED and data.get("received_at") is not None:
            # The RECEIVED this RECORDED stands for, on the broker's timeline: the bureau's
            # clock may be off, but the interval it measured between the two is not.
            received = data["received_at"]
            times.append((AckStatus.RECEIVED.value, received, broker_at - (data["at"] - received)))
        events = [(data["notice_id"], data["version"])]
        events += [(e["notice_id"], e["version"]) for e in data.get("also", ())]
        for notice_id, version in events:
            # A REJECTED ack of a record without a readable notice id carries "" and 0.
            _notice_id(notice_id, empty=status is AckStatus.REJECTED)
            _version(version)
        return [
            (country, notice_id, version, state, position, at, seen, adapter_id, reason)
            for notice_id, version in events
            for state, at, seen in times
        ]


def _length(column: Any) -> int | None:
    length: int | None = getattr(column.type, "length", None)
    return length


_TEXT, _RESPONDER = _length(RESPONSE.c.text), _length(RESPONSE.c.responder)
_ADAPTER_ID, _REASON = _length(ACK.c.adapter_id), _length(ACK.c.reason)
_POSITION = _length(ACK.c.position) or 32


def _notice_id(value: Any, *, empty: bool = False) -> None:
    if not isinstance(value, str) or not (NOTICE_ID.match(value) or (empty and value == "")):
        shown = repr(value)[:60]
        raise InvalidNotice(f"must look like YYYY/NNNNN, got {shown}", field="notice_id")


def _version(value: Any, low: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= _INT32:
        raise InvalidNotice(f"must be an integer {low} to {_INT32}, got {value!r}", field="version")


def _text(value: Any, length: int | None) -> Any:
    """A free-text field made to fit its column: cut to ``length``, without NUL characters
    (PostgreSQL cannot store them). What it says is for people; a cut does no harm."""
    if not isinstance(value, str):
        return value
    value = _clean(value)
    return value[:length] if length is not None else value


def _clean(text: str) -> str:
    return text.replace("\x00", "\ufffd") if "\x00" in text else text
