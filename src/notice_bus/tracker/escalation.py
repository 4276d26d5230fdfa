"""Deadlines, overdue detection and escalation: incidents to a webhook, reminders to bureaux.

Overdue, per country, with the deadlines of :class:`~notice_bus.tracker.policy.Policy`; every age
runs from the broker's arrival time, never a bureau's clock:

* ``NOT_RECORDED``: a notice version sent to the country with neither a RECORDED nor a REJECTED
  acknowledgement ``record_within_s`` after it arrived. Counted per version, as the report does.
* ``NOT_ANSWERED``: a notice first sent to the country more than ``answer_within_s`` ago that the
  bureau has not answered (tracker_response) and whose latest version is not a cancellation.

Incidents (tracker_incident): at most one open incident per (country, kind). One opens when the
country has overdue notices of that kind and none is open; it closes when none is left. Its
"open", then its "close", is POSTed to ``webhook_url``. ``open_sent``/``close_sent`` are set only
after a 2xx answer; a failed POST is logged and retried at the next :meth:`Escalator.evaluate`,
so no incident is announced twice and no "close" goes out before its "open". (A process that dies
between the answer and the update sends again: receivers may deduplicate on incident_id and
event.) Without ``webhook_url`` incidents are recorded and nothing is posted. An "open" says what
was true when the incident opened: ``overdue`` (count), ``oldest_overdue_s`` (the oldest overdue
notice's age since it arrived) and ``notices`` (up to 20 ids, oldest first).

A copy that drifted: an incident of kind ``COPY_DRIFT`` opens for a country whose latest copy
check (:mod:`notice_bus.tracker.copies`) is DRIFT with differences the adapter did not mend, and
closes when a later check finds none left (VERIFIED, or a drift all mended); a check that cannot
verify the copy (UNVERIFIABLE) neither opens nor closes one. Its "open" says ``differences``
(count), ``drift`` (count by kind), ``manifest_id``, ``checked_at`` and ``notices`` (up to 10
ids of differences still there). Copies get no reminders: the bureau's own check told it.

Reminders: each overdue notice is reminded on the country's ``reminders.CC`` topic (Avro
``Reminder``, keyed by notice id) at most once per ``reminder_interval_s`` per (country, notice,
kind); tracker_reminder records a reminder once the broker has confirmed it.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from kafka import KafkaProducer
from kafka.errors import KafkaError
from sqlalchemy import and_, false, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine

from notice_bus.errors import BrokerUnavailable, ConfigError, NoticeBusError
from notice_bus.runtime.db import as_utc, dialect_insert, transaction, translate_errors
from notice_bus.runtime.kafka import explain, kafka_config
from notice_bus.runtime.settings import Settings
from notice_bus.tracker import measures
from notice_bus.tracker.copies import CopyState, latest_checks
from notice_bus.tracker.policy import Policy
from notice_bus.tracker.tables import INCIDENT, REMINDER_SENT, SENT
from notice_bus.tracker.webhook import post_json, site_of
from notice_bus.wire.codec import AvroCodec, SchemaStore, load_schema
from notice_bus.wire.manifest import CopyStatus
from notice_bus.wire.model import Overdue, Reminder, utcnow
from notice_bus.wire.schema_registry import KafkaSchemaStore
from notice_bus.wire.topics import TopicNames

__all__ = ["EscalationResult", "Escalator", "post_json"]

log = logging.getLogger("notice_bus.escalation")
Post = Callable[[str, dict[str, Any]], None]
_MAX_IDS = 20  # notice ids listed in an "open"
_PG_LOCK = 0x6E625F657363  # advisory lock key ("nb_esc") shared by escalators on PostgreSQL
COPY_DRIFT = "COPY_DRIFT"  # the incident kind of a copy that drifted


@dataclass(frozen=True, slots=True)
class EscalationResult:
    """What one :meth:`Escalator.evaluate` did."""

    opened: int = 0
    closed: int = 0
    reminders_sent: int = 0


@dataclass(frozen=True, slots=True)
class _Late:
    notice_id: str
    version: int | None  # None for NOT_ANSWERED: looked up only when a reminder is due
    since: datetime  # broker arrival (first arrival for NOT_ANSWERED)
    deadline: datetime


class Escalator:
    """Detects overdue notices in the tracker's database and escalates them (see module doc).

    Run one per tracker database; the incident bookkeeping is serialised by a database lock so
    concurrent escalators never open an incident twice. Close it to release the producer.
    """

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        clock: Callable[[], datetime] = utcnow,
        schemas: SchemaStore | None = None,
        post: Post | None = None,
    ) -> None:
        url = settings.webhook_url
        if url and post is None and urlsplit(url).scheme not in ("http", "https"):
            raise ConfigError(f"webhook_url must be an http(s) URL, got {site_of(url)!r}")
        self.settings = settings
        self.engine = engine
        self._clock = clock
        self._policy = Policy.from_settings(settings)
        self._names = TopicNames(settings.topic_prefix)
        self._schemas = schemas
        self._post = post if post is not None else post_json
        self._codec: AvroCodec | None = None
        self._producer: Any = None

    def evaluate(self) -> EscalationResult:
        """Open and close incidents, deliver pending webhooks, send due reminders."""
        now = self._clock()
        late = self._overdue(now)
        with translate_errors(str(self.engine.url)), self.engine.connect() as conn:
            copies = latest_checks(conn)
        opened, closed = self._book(late, now, copies)
        if self.settings.webhook_url:
            self._deliver()
        return EscalationResult(opened, closed, self._remind(late, now))

    def __call__(self) -> None:
        """``evaluate`` as the tracker's ``on_sample`` hook."""
        result = self.evaluate()
        if result != EscalationResult():
            log.info("escalation: %s", result)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=10)
            self._producer = None

    # --- detection and bookkeeping --------------------------------------------------------------

    def _overdue(self, now: datetime) -> dict[tuple[str, Overdue], list[_Late]]:
        """Overdue items per (country, kind), oldest first."""
        deadlines = [self._policy.default, *self._policy.countries.values()]
        loosest = min(d.answer_within_s for d in deadlines)
        with translate_errors(str(self.engine.url)), self.engine.connect() as conn:
            waiting = measures.outstanding(conn, None)
            unanswered = measures.unanswered(conn, now - timedelta(seconds=loosest))
        out: dict[tuple[str, Overdue], list[_Late]] = defaultdict(list)
        for r in waiting:
            since = as_utc(r.broker_at)
            due = since + timedelta(seconds=self._policy.of(r.country).record_within_s)
            if now > due:
                out[(r.country, Overdue.NOT_RECORDED)].append(
                    _Late(r.notice_id, r.version, since, due)
                )
        for country, notice_id, first_at in unanswered:
            since = as_utc(first_at)
            due = since + timedelta(seconds=self._policy.of(country).answer_within_s)
            if now > due:
                out[(country, Overdue.NOT_ANSWERED)].append(_Late(notice_id, None, since, due))
        for items in out.values():
            items.sort(key=lambda i: i.since)
        return out

    def _book(
        self,
        late: dict[tuple[str, Overdue], list[_Late]],
        now: datetime,
        copies: dict[str, CopyState] | None = None,
    ) -> tuple[int, int]:
        copies = copies or {}
        drifted = {cc: c for cc, c in copies.items() if c.drifting}
        # UNVERIFIABLE says nothing of the copy: an incident open stays open.
        unknown = {cc for cc, c in copies.items() if c.status is CopyStatus.UNVERIFIABLE}
        opened = closed = 0
        with transaction(self.engine) as conn:
            _lock(conn)
            current: dict[tuple[str, str], list[int]] = defaultdict(list)
            query = select(INCIDENT.c.id, INCIDENT.c.country, INCIDENT.c.kind)
            for r in conn.execute(query.where(INCIDENT.c.closed_at.is_(None))):
                current[(r.country, r.kind)].append(r.id)
            for (cc, kind), items in sorted(late.items()):
                if (cc, kind.value) in current:
                    continue
                ids = list(dict.fromkeys(i.notice_id for i in items))[:_MAX_IDS]
                # What the "open" says is frozen here, so a retried POST says the same.
                detail = {
                    "overdue": len(items),
                    "oldest_overdue_s": round((now - items[0].since).total_seconds(), 3),
                    "notices": ids,
                }
                conn.execute(
                    insert(INCIDENT).values(
                        country=cc, kind=kind.value, opened_at=now, detail=json.dumps(detail)
                    )
                )
                log.warning("escalation: %s %s, %d overdue: incident opened", cc, kind, len(items))
                opened += 1
            for cc, copy in sorted(drifted.items()):
                if (cc, COPY_DRIFT) in current:
                    continue
                detail = {
                    "differences": sum(copy.drift.values()),
                    "drift": copy.drift,
                    "manifest_id": copy.manifest_id,
                    "checked_at": as_utc(copy.checked_at).isoformat(),
                    "notices": [n for n, _ in copy.examples][:_MAX_IDS],
                }
                conn.execute(
                    insert(INCIDENT).values(
                        country=cc, kind=COPY_DRIFT, opened_at=now, detail=json.dumps(detail)
                    )
                )
                log.warning("escalation: %s's copy drifted, %s: incident opened", cc, copy.drift)
                opened += 1
            for (cc, kind_s), incident_ids in current.items():
                if kind_s == COPY_DRIFT:
                    if cc in drifted or cc in unknown:
                        continue
                elif (cc, kind_s) in late:  # Overdue is a StrEnum: its members equal their names
                    continue
                conn.execute(
                    update(INCIDENT).where(INCIDENT.c.id.in_(incident_ids)).values(closed_at=now)
                )
                what = "copy mended or verified" if kind_s == COPY_DRIFT else "none overdue"
                log.warning("escalation: %s %s, %s: incident closed", cc, kind_s, what)
                closed += len(incident_ids)
        return opened, closed

    # --- webhook --------------------------------------------------------------------------------

    def _deliver(self) -> None:
        """Pending opens, and closes whose open went out, oldest incident first. The first
        failure ends the round: the receiver is likely down, and waiting on it again for every
        incident would stall the tracker."""
        pending = or_(
            INCIDENT.c.open_sent.is_(False),
            and_(INCIDENT.c.closed_at.is_not(None), INCIDENT.c.close_sent.is_(False)),
        )
        with translate_errors(str(self.engine.url)), self.engine.connect() as conn:
            rows = conn.execute(select(INCIDENT).where(pending).order_by(INCIDENT.c.id)).all()
        for row in rows:
            if not row.open_sent and not self._send(row, "open"):
                return
            if row.closed_at is not None and not self._send(row, "close"):
                return

    def _send(self, row: Any, event: str) -> bool:
        opened_at = as_utc(row.opened_at)
        body: dict[str, Any] = {"event": event, "incident_id": row.id, "country": row.country}
        body.update(kind=row.kind, opened_at=opened_at.isoformat())
        if event == "open":
            body.update(json.loads(row.detail or "{}"))
        else:
            closed_at = as_utc(row.closed_at)
            duration = round((closed_at - opened_at).total_seconds(), 3)
            body.update(closed_at=closed_at.isoformat(), duration_s=duration)
        try:
            self._post(self.settings.webhook_url, body)
        except NoticeBusError as exc:
            log.error("escalation: %s of incident %d not delivered, retried next round: %s",
                      event, row.id, exc)  # fmt: skip
            return False
        flag = {"open_sent": True} if event == "open" else {"close_sent": True}
        with transaction(self.engine) as conn:
            conn.execute(update(INCIDENT).where(INCIDENT.c.id == row.id).values(**flag))
        return True

    # --- reminders ------------------------------------------------------------------------------

    def _remind(self, late: dict[tuple[str, Overdue], list[_Late]], now: datetime) -> int:
        interval = timedelta(seconds=self.settings.reminder_interval_s)
        recent_q = select(REMINDER_SENT.c.country, REMINDER_SENT.c.notice_id, REMINDER_SENT.c.kind)
        with translate_errors(str(self.engine.url)), self.engine.connect() as conn:
            recent = set(conn.execute(recent_q.where(REMINDER_SENT.c.sent_at > now - interval)))
        due: list[tuple[str, Overdue, _Late]] = []
        for (cc, kind), items in sorted(late.items()):
            newest = {i.notice_id: i for i in items}  # one per notice: its latest arrival
            due += [(cc, kind, i) for n, i in newest.items() if (cc, n, kind.value) not in recent]
        if not due:
            return 0
        versions = self._latest_versions({i.notice_id for _, _, i in due if i.version is None})
        reminders = []
        for cc, kind, item in due:
            version = item.version or versions.get((cc, item.notice_id), 1)
            within = self._policy.of(cc)
            limit = (
                within.record_within_s if kind is Overdue.NOT_RECORDED else within.answer_within_s
            )
            verb = "recorded" if kind is Overdue.NOT_RECORDED else "answered"
            text = (
                f"Notice {item.notice_id} v{version} was not {verb} within {_span(limit)}"
                f" (deadline {_stamp(item.deadline)})"
            )
            reminders.append(Reminder(cc, item.notice_id, version, kind, item.deadline, now, text))
        return self._publish(reminders, now)

    def _latest_versions(self, notice_ids: set[str]) -> dict[tuple[str, str], int]:
        ids = sorted(notice_ids)
        out: dict[tuple[str, str], int] = {}
        with translate_errors(str(self.engine.url)), self.engine.connect() as conn:
            for start in range(0, len(ids), 500):  # bounded IN lists
                query = (
                    select(SENT.c.country, SENT.c.notice_id, func.max(SENT.c.version))
                    .where(SENT.c.notice_id.in_(ids[start : start + 500]))
                    .group_by(SENT.c.country, SENT.c.notice_id)
                )
                out.update({(cc, n): v for cc, n, v in conn.execute(query)})
        return out

    def _publish(self, reminders: list[Reminder], now: datetime) -> int:
        """Send, wait for the broker, record what it confirmed; then report any failure."""
        failure: KafkaError | None = None
        sent: list[tuple[Reminder, Any]] = []
        try:
            if self._producer is None:
                self._producer = KafkaProducer(
                    **kafka_config(self.settings, "notice-bus-escalation", producer=True)
                )
            if self._codec is None:
                store = (
                    self._schemas if self._schemas is not None else KafkaSchemaStore(self.settings)
                )
                self._codec = AvroCodec(load_schema("reminder"), store)
        except KafkaError as exc:
            raise BrokerUnavailable(
                f"escalation: no producer for {self.settings.bootstrap_servers}: {explain(exc)}"
            ) from exc
        broken: set[str] = set()  # a topic that failed once (missing, say) is not waited on again
        for r in reminders:
            topic = self._names.reminders(r.country)
            if topic in broken:
                continue
            try:
                value = self._codec.encode(r.to_avro())
                sent.append((r, self._producer.send(topic, key=r.notice_id.encode(), value=value)))
            except KafkaError as exc:
                broken.add(topic)
                failure = failure or exc
        confirmed: list[Reminder] = []
        for r, future in sent:
            try:
                future.get(timeout=30)
                confirmed.append(r)
            except KafkaError as exc:
                failure = failure or exc
        if confirmed:
            rows = [
                dict(country=r.country, notice_id=r.notice_id, kind=r.kind.value, sent_at=now)
                for r in confirmed
            ]
            with transaction(self.engine) as conn:
                stmt = dialect_insert(conn)(REMINDER_SENT).values(rows)
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["country", "notice_id", "kind"],
                        set_={"sent_at": stmt.excluded.sent_at},
                    )
                )
        if failure is not None:
            raise BrokerUnavailable(
                f"escalation: {len(reminders) - len(confirmed)} reminders not sent to"
                f" {self.settings.bootstrap_servers}, retried next round: {failure}"
            ) from failure
        return len(confirmed)


def _lock(conn: Connection) -> None:
    """Serialise incident bookkeeping between escalators sharing the database."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(_PG_LOCK)))
    else:
        # A write as the transaction's first statement takes SQLite's write lock at once, so
        # a second escalator waits here rather than deciding on what is about to change.
        conn.execute(update(INCIDENT).where(false()).values(id=INCIDENT.c.id))


def _span(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def _stamp(at: datetime) -> str:
    at = as_utc(at)
    return at.strftime(
        "%Y-%m-%dT%H:%MZ" if at.second == at.microsecond == 0 else "%Y-%m-%dT%H:%M:%SZ"
    )
