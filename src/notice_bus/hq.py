"""HQ: publishes, updates and cancels red notices through a transactional outbox.

A call writes the notice's new version and one outbox row per target country in a single
database transaction; the relay then sends the outbox rows with the idempotent producer
(acks=all) and marks them sent. A crash between the two leaves rows unsent, and the next relay
(any later call, or ``notice-bus relay``) sends them: nothing is lost, and a row sent twice is
the same notice version, which every consumer takes in once.

HQ keeps its list of registered countries for ``country_refresh_s`` rather than listing every
topic on each call. A country registered meanwhile misses the broadcasts made with the old
list, so HQ remembers those broadcasts until its next look at the broker (at the latest when
it is closed) and sends them to every country that look finds new. Together with the
newcomer's bootstrap, a country registered at any moment gets every broadcast.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError
from sqlalchemy import insert, select, update
from sqlmodel import Session, col

from notice_bus.codec import AvroCodec, SchemaStore, load_schema
from notice_bus.db import make_engine, transaction, translate_errors
from notice_bus.errors import BrokerUnavailable, HQStateError, InvalidNotice, NoticeBusError
from notice_bus.model import Action, NoticeEvent, Person, utcnow
from notice_bus.schema_registry import KafkaSchemaStore
from notice_bus.settings import Settings
from notice_bus.tables import (
    ACTIVE,
    HQ_NOTICE,
    HQ_TABLES,
    OUTBOX,
    WITHDRAWN,
    HQNotice,
)
from notice_bus.topics import (
    TopicNames,
    admin_client,
    announce_topics,
    corked,
    kafka_config,
    registered_countries,
)
from notice_bus.validation import Draft, check_notice_id, parse_draft

log = logging.getLogger("notice_bus.hq")
_OUTBOX: Any = OUTBOX


def read_drafts(path: str | Path) -> list[Draft]:
    """Parse a JSON file holding one notice or a list; every error names the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidNotice(f"cannot read: {exc.strerror}", source=str(path)) from exc
    except json.JSONDecodeError as exc:
        raise InvalidNotice(f"not valid JSON: {exc}", source=str(path)) from exc
    items = data if isinstance(data, list) else [data]
    drafts = []
    for i, item in enumerate(items):
        try:
            drafts.append(parse_draft(item))
        except InvalidNotice as exc:
            where = f"{path}[{i}]" if isinstance(data, list) else str(path)
            raise exc.located(where) from None
    seen: set[str] = set()
    for d in drafts:
        if d.notice_id in seen:
            raise InvalidNotice(
                "appears twice in the file", notice_id=d.notice_id, source=str(path)
            )
        seen.add(d.notice_id)
    return drafts


class HQ:
    """HQ's side of notice-bus. Close it (or use ``with``) to release the producer."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
        schemas: SchemaStore | None = None,
    ) -> None:
        self.settings = settings
        self.engine = make_engine(settings.hq_database_url, HQ_TABLES)
        self._clock = clock
        self._names = TopicNames(settings.topic_prefix)
        store = schemas if schemas is not None else KafkaSchemaStore(settings)
        self._codec = AvroCodec(load_schema("notice_event"), store)
        self._producer: Any = None
        self._admin: Any = None
        self._known: list[str] | None = None
        self._looked_at = 0.0
        self._broadcasts: list[tuple[NoticeEvent, bytes]] = []  # made with the current list

    def publish(self, drafts: Iterable[Draft], *, relay: bool = True) -> list[NoticeEvent]:
        """Publish new notices and update existing ones. A draft identical to the current
        version of its notice is skipped. Nothing is written unless every draft is acceptable."""
        drafts = list(drafts)
        countries = self._countries()
        wanted = {cc for d in drafts for cc in d.target_countries}
        if not wanted <= set(countries):  # perhaps registered since the last look
            countries = self._countries(fresh=True)
        for d in drafts:
            unknown = sorted(set(d.target_countries) - set(countries))
            if unknown:
                raise InvalidNotice(
                    f"no topic for {', '.join(unknown)}; run `notice-bus topics init`",
                    field="target_countries",
                    notice_id=d.notice_id,
                )
        events: list[NoticeEvent] = []
        broadcasts: list[tuple[NoticeEvent, bytes]] = []
        with self._session() as session:
            known = self._current(session, [d.notice_id for d in drafts])
            for d in drafts:
                current = known.get(d.notice_id)
                person = d.person.to_avro()
                if current is not None and current.status == WITHDRAWN:
                    raise HQStateError(f"notice {d.notice_id} was cancelled; it cannot be updated")
                if current is not None and (current.person, current.target_countries) == (
                    person,
                    list(d.target_countries),
                ):
                    continue
                event = NoticeEvent(
                    notice_id=d.notice_id,
                    version=1 if current is None else current.version + 1,
                    action=Action.PUBLISH if current is None else Action.UPDATE,
                    requesting_country=d.requesting_country,
                    published_at=self._clock(),
                    target_countries=d.target_countries,
                    person=d.person,
                )
                row = HQNotice(
                    notice_id=d.notice_id,
                    version=event.version,
                    status=ACTIVE,
                    requesting_country=d.requesting_country,
                    target_countries=list(d.target_countries),
                    person=person,
                    updated_at=event.published_at,
                )
                if current is None:
                    session.add(row)
                else:
                    row = session.merge(row)
                known[d.notice_id] = row
                payload = self._enqueue(session, event, d.target_countries or countries)
                if not d.target_countries:
                    broadcasts.append((event, payload))
                events.append(event)
        self._broadcasts += broadcasts  # committed: remembered for a newcomer
        if relay:
            self.relay()
        return events

    @staticmethod
    def _current(session: Session, notice_ids: list[str]) -> dict[str, HQNotice]:
        """The current rows of ``notice_ids``, in one query per thousand (not one each)."""
        found: dict[str, HQNotice] = {}
        for i in range(0, len(notice_ids), 1000):
            chunk = notice_ids[i : i + 1000]
            query = select(HQNotice).where(col(HQNotice.notice_id).in_(chunk))
            found.update((n.notice_id, n) for n in session.scalars(query))
        return found

    def cancel(self, notice_id: str, reason: str = "", *, relay: bool = True) -> NoticeEvent:
        """Withdraw a notice everywhere it was sent."""
        try:
            check_notice_id(notice_id)
        except InvalidNotice as exc:
            raise InvalidNotice(exc.reason, field=exc.field, notice_id=notice_id) from None
        countries = self._countries()
        with self._session() as session:
            current = session.get(HQNotice, notice_id)
            if current is None:
                raise HQStateError(f"notice {notice_id} was never published by this HQ")
            if current.status == WITHDRAWN:
                raise HQStateError(f"notice {notice_id} is already cancelled")
            event = NoticeEvent(
                notice_id=notice_id,
                version=current.version + 1,
                action=Action.CANCEL,
                requesting_country=current.requesting_country,
                published_at=self._clock(),
                target_countries=tuple(current.target_countries),
                reason=reason or None,
            )
            current.version, current.status = event.version, WITHDRAWN
            current.updated_at = event.published_at
            session.add(current)
            payload = self._enqueue(session, event, current.target_countries or countries)
        if not event.target_countries:
            self._broadcasts.append((event, payload))
        if relay:
            self.relay()
        return event

    def bootstrap(self, country: str, *, relay: bool = True) -> int:
        """Send ``country`` (which joined late) the current version of every active notice
        meant for it; cancelled notices are not sent. Returns how many were queued."""
        if country not in self._countries(fresh=True, bootstrapping=country):
            raise HQStateError(f"{country} has no topic; run `notice-bus topics init` first")
        queued = 0
        with self._session() as session:
            active = select(HQ_NOTICE).where(HQ_NOTICE.c.status == ACTIVE)
            for notice in session.execute(active):
                if notice.target_countries and country not in notice.target_countries:
                    continue
                event = NoticeEvent(
                    notice_id=notice.notice_id,
                    version=notice.version,
                    action=Action.PUBLISH if notice.version == 1 else Action.UPDATE,
                    requesting_country=notice.requesting_country,
                    published_at=notice.updated_at,
                    target_countries=tuple(notice.target_countries),
                    person=Person.from_avro(notice.person or {}),
                )
                self._enqueue(session, event, [country])
                queued += 1
        if relay:
            self.relay()
        return queued

    def person(self, notice_id: str) -> Person | None:
        """The current person data HQ holds for a notice (``None`` if unknown or cancelled)."""
        with Session(self.engine) as session:
            row = session.get(HQNotice, notice_id)
        return Person.from_avro(row.person) if row and row.person else None

    def relay(self, batch: int = 1000) -> int:
        """Send every pending outbox row, oldest first; returns how many were sent."""
        sent = 0
        while True:
            with translate_errors(str(self.engine.url)), self.engine.connect() as conn:
                rows = conn.execute(
                    select(_OUTBOX.c.id, _OUTBOX.c.topic, _OUTBOX.c.key, _OUTBOX.c.payload)
                    .where(_OUTBOX.c.sent_at.is_(None))
                    .order_by(_OUTBOX.c.id)
                    .limit(batch)
                ).all()
            if not rows:
                return sent
            self._send(rows)
            with transaction(self.engine) as conn:
                conn.execute(
                    update(_OUTBOX)
                    .where(_OUTBOX.c.id.in_([r.id for r in rows]))
                    .values(sent_at=self._clock())
                )
            sent += len(rows)

    def pending(self) -> int:
        """Outbox rows not yet confirmed by the broker."""
        with self.engine.connect() as conn:
            return len(conn.execute(select(_OUTBOX.c.id).where(_OUTBOX.c.sent_at.is_(None))).all())

    def close(self) -> None:
        if self._broadcasts:  # a country registered since the last look must not miss them
            try:
                before = self._known
                if self._countries(fresh=True) != before:
                    self.relay()
            except NoticeBusError as exc:
                log.error(
                    "HQ could not check for newly registered countries before closing (%s);"
                    " run `notice-bus bootstrap` for any country registered in the last %g s",
                    exc,
                    self.settings.country_refresh_s,
                )
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self._producer is not None:
            self._producer.close(timeout=10)
            self._producer = None
        self.engine.dispose()

    def __enter__(self) -> HQ:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with (
            translate_errors(str(self.engine.url)),
            Session(self.engine) as session,
            session.begin(),
        ):
            yield session

    def _countries(self, *, fresh: bool = False, bootstrapping: str = "") -> list[str]:
        """Registered countries, asked of the broker over one admin connection kept open when
        the list is older than ``country_refresh_s`` (or ``fresh`` is asked for). Countries
        found new get the latest version of each broadcast made with the old list (a cancel,
        not the notice it withdrew), in their own transaction; ``bootstrapping`` does not,
        as the bootstrap that follows sends it everything committed so far."""
        due = time.monotonic() - self._looked_at >= self.settings.country_refresh_s
        if self._known is not None and not (fresh or due):
            return self._known
        if self._admin is None:
            self._admin = admin_client(self.settings)
        try:
            countries = registered_countries(self.settings, self._admin)
        except BrokerUnavailable:
            self._admin.close()
            self._admin = None  # a fresh connection next time
            raise
        known = countries if self._known is None else self._known
        added = sorted(set(countries) - set(known) - {bootstrapping})
        latest = {event.notice_id: (event, payload) for event, payload in self._broadcasts}
        if added and latest:
            with self._session() as session:
                for event, payload in latest.values():
                    self._enqueue(session, event, added, payload)
            log.info(
                "queued %d recent broadcasts for %s, registered meanwhile",
                len(latest),
                ", ".join(added),
            )
        self._known, self._looked_at, self._broadcasts = countries, time.monotonic(), []
        return countries

    def _enqueue(
        self,
        session: Session,
        event: NoticeEvent,
        countries: Sequence[str],
        payload: bytes | None = None,
    ) -> bytes:
        if payload is None:
            payload = self._codec.encode(event.to_avro())
        # One multi-row insert: a broadcast is ~200 rows, too many for ORM objects at 2/s.
        rows = [
            {
                "topic": self._names.notices(cc),
                "key": event.notice_id,
                "payload": payload,
                "created_at": event.published_at,
            }
            for cc in countries
        ]
        if rows:  # no country registered yet: the notice waits at HQ for their bootstrap
            session.execute(insert(_OUTBOX), rows)
        return payload

    def _send(self, rows: Sequence[Any]) -> None:
        try:
            if self._producer is None:
                self._producer = KafkaProducer(
                    enable_idempotence=True,  # a retried send is written once
                    acks="all",
                    **kafka_config(self.settings, "notice-bus-hq"),
                    linger_ms=5,
                    max_block_ms=30000,
                )
            announce_topics(self._producer, {r.topic for r in rows})
            with corked(self._producer):
                futures = [
                    self._producer.send(r.topic, key=r.key.encode(), value=r.payload) for r in rows
                ]
            self._producer.flush(timeout=60)
            for f in futures:
                f.get(timeout=60)
        except KafkaError as exc:
            raise BrokerUnavailable(
                f"sending to Kafka at {self.settings.bootstrap_servers} failed ({exc}); the"
                " notices are kept in HQ's outbox and go out with the next `notice-bus relay`"
            ) from exc
