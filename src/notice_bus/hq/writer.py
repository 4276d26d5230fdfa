"""The transactions that make and queue notice versions, for :class:`notice_bus.hq.publisher.HQ`.

Each runs inside :func:`notice_bus.hq.store.write`: it locks the notices it reads before
reading them, writes the new versions (``hq_notice``, ``hq_version``) and their outbox rows,
and may be run again from the start if it lost a race to another HQ process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import CursorResult, Row
from sqlalchemy.orm import Session

from notice_bus.errors import HQStateError
from notice_bus.hq.store import (
    CHUNK,
    current_payloads,
    delivered,
    lock_all_notices,
    lock_notices,
    stale,
)
from notice_bus.hq.tables import HQ_NOTICE, HQ_VERSION, OUTBOX
from notice_bus.runtime.db import as_utc
from notice_bus.wire.codec import AvroCodec
from notice_bus.wire.model import ACTIVE, WITHDRAWN, Action, NoticeEvent, Person
from notice_bus.wire.topics import TopicNames
from notice_bus.wire.validation import Draft

log = logging.getLogger("notice_bus.hq")
_OUTBOX: Any = OUTBOX
_NOTICE: Any = HQ_NOTICE
# An executemany UPDATE of hq_notice that names the version each row was read at.
_SAVE = (
    update(_NOTICE)
    .where(_NOTICE.c.notice_id == bindparam("b_id"), _NOTICE.c.version == bindparam("b_read"))
    .values(
        {
            name: bindparam(f"b_{name}", type_=_NOTICE.c[name].type)
            for name in ("version", "status", "target_countries", "person", "updated_at")
        }
    )
)
_LEGACY_ACTION = {  # (cancelled, first version): the action of a version made before 'hq_version'
    (True, True): Action.CANCEL,
    (True, False): Action.CANCEL,
    (False, True): Action.PUBLISH,
    (False, False): Action.UPDATE,
}


@dataclass(slots=True)
class _Notice:
    """A notice's ``hq_notice`` row, as read, then as it is to be written."""

    version: int
    status: str
    requesting_country: str
    target_countries: list[str]
    person: dict[str, Any] | None
    updated_at: datetime

    @classmethod
    def of(cls, row: Row[Any]) -> _Notice:
        return cls(
            row.version,
            row.status,
            row.requesting_country,
            list(row.target_countries),
            row.person,
            row.updated_at,
        )


class Writer:
    """Makes the versions of notices and queues them. ``clock`` dates each version, called
    once the notice's current version is read and locked; ``registered`` asks the broker for
    the registered countries now."""

    def __init__(
        self,
        codec: AvroCodec,
        names: TopicNames,
        clock: Callable[[], datetime],
        registered: Callable[[], list[str]],
    ) -> None:
        self._codec = codec
        self._names = names
        self._clock = clock
        self._registered = registered

    def publish(
        self, session: Session, drafts: list[Draft], countries: list[str]
    ) -> tuple[list[NoticeEvent], set[str]]:
        read = lock_notices(session, [d.notice_id for d in drafts])
        known = {notice_id: _Notice.of(row) for notice_id, row in read.items()}
        sent_to = self._delivered(session, list(read), countries)
        events: list[NoticeEvent] = []
        versions: list[dict[str, Any]] = []
        outbox: list[dict[str, Any]] = []
        broadcasts: set[str] = set()
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
            known[d.notice_id] = _Notice(
                event.version,
                ACTIVE,
                d.requesting_country,
                list(d.target_countries),
                person,
                event.published_at,
            )
            payload = self._codec.encode(event.to_avro())
            versions.append(
                {"notice_id": d.notice_id, "version": event.version, "payload": payload}
            )
            to = sent_to.setdefault(d.notice_id, set())
            to.update(d.target_countries or countries)
            outbox += self._outbox_rows(d.notice_id, payload, event.published_at, to)
            if not d.target_countries:
                broadcasts.add(d.notice_id)
            events.append(event)
        changed = {e.notice_id: known[e.notice_id] for e in events}
        self._save(session, changed, {notice_id: row.version for notice_id, row in read.items()})
        self._insert(session, versions, outbox)
        return events, broadcasts

    def cancel(
        self, session: Session, notice_id: str, reason: str, countries: list[str]
    ) -> NoticeEvent:
        row = lock_notices(session, [notice_id]).get(notice_id)
        if row is None:
            raise HQStateError(f"notice {notice_id} was never published by this HQ")
        if row.status == WITHDRAWN:
            raise HQStateError(f"notice {notice_id} is already cancelled")
        event = NoticeEvent(
            notice_id=notice_id,
            version=row.version + 1,
            action=Action.CANCEL,
            requesting_country=row.requesting_country,
            published_at=self._clock(),
            target_countries=tuple(row.target_countries),
            reason=reason or None,
        )
        notice = _Notice.of(row)
        notice.version, notice.status = event.version, WITHDRAWN
        notice.updated_at = event.published_at
        self._save(session, {notice_id: notice}, {notice_id: row.version})
        to = self._delivered(session, [notice_id], countries).get(notice_id, set())
        to.update(row.target_countries or countries)
        payload = self._codec.encode(event.to_avro())
        version = {"notice_id": notice_id, "version": event.version, "payload": payload}
        self._insert(
            session, [version], self._outbox_rows(notice_id, payload, event.published_at, to)
        )
        return event

    def bootstrap(self, session: Session, country: str) -> int:
        lock_all_notices(session)  # no version is made between reading and queueing
        query = (
            select(_NOTICE.c.notice_id, _NOTICE.c.target_countries, HQ_VERSION.c.payload)
            .select_from(
                _NOTICE.outerjoin(
                    HQ_VERSION,
                    (HQ_VERSION.c.notice_id == _NOTICE.c.notice_id)
                    & (HQ_VERSION.c.version == _NOTICE.c.version),
                )
            )
            .where(_NOTICE.c.status == ACTIVE)
        )
        payloads: dict[str, bytes] = {}
        missing: list[str] = []
        for notice in session.execute(query):
            if notice.target_countries and country not in notice.target_countries:
                continue
            if notice.payload is None:
                missing.append(notice.notice_id)
            else:
                payloads[notice.notice_id] = notice.payload
        payloads.update(self._store_unstored(session, missing))
        now = self._clock()
        rows = [r for n, p in payloads.items() for r in self._outbox_rows(n, p, now, [country])]
        self._insert(session, [], rows)
        return len(rows)

    def catch_up(self, session: Session, added: list[str], notice_ids: list[str]) -> None:
        rows = lock_notices(session, notice_ids)  # then their current version stays current
        payloads = current_payloads(session, list(rows))
        payloads.update(self._store_unstored(session, [n for n in rows if n not in payloads]))
        now = self._clock()
        outbox: list[dict[str, Any]] = []
        for notice_id, row in rows.items():
            to = [cc for cc in added if not row.target_countries or cc in row.target_countries]
            outbox += self._outbox_rows(notice_id, payloads[notice_id], now, to)
        self._insert(session, [], outbox)

    def _delivered(
        self, session: Session, notice_ids: list[str], countries: list[str]
    ) -> dict[str, set[str]]:
        """The registered countries each notice was ever queued for."""
        if not notice_ids:
            return {}
        found = delivered(session, self._names, notice_ids)
        unknown = set().union(*found.values()) - set(countries)
        if unknown:  # registered since HQ's last look, or no longer registered
            gone = unknown - set(self._registered())
            if gone:  # a record for a topic that does not exist would hold up the relay
                log.warning("not sending to %s: no longer registered", ", ".join(sorted(gone)))
                for ccs in found.values():
                    ccs -= gone
        return found

    @staticmethod
    def _save(session: Session, notices: dict[str, _Notice], read: dict[str, int]) -> None:
        """Write ``notices``: insert the new ones, update the others only if still at the
        version ``read`` (the row lock makes that so; a lost race otherwise)."""
        new = [
            {
                "notice_id": notice_id,
                "version": n.version,
                "status": n.status,
                "requesting_country": n.requesting_country,
                "target_countries": n.target_countries,
                "person": n.person,
                "updated_at": n.updated_at,
            }
            for notice_id, n in notices.items()
            if notice_id not in read
        ]
        if new:
            session.execute(insert(_NOTICE), new)
        changed = [
            {
                "b_id": notice_id,
                "b_read": read[notice_id],
                "b_version": n.version,
                "b_status": n.status,
                "b_target_countries": n.target_countries,
                "b_person": n.person,
                "b_updated_at": n.updated_at,
            }
            for notice_id, n in notices.items()
            if notice_id in read
        ]
        if changed:
            result = cast("CursorResult[Any]", session.execute(_SAVE, changed))
            if result.rowcount != len(changed):
                raise stale(", ".join(sorted(notices)))

    @staticmethod
    def _insert(
        session: Session, versions: list[dict[str, Any]], outbox: list[dict[str, Any]]
    ) -> None:
        """One multi-row insert each: a broadcast is ~200 rows, a bootstrap thousands."""
        if versions:  # its key refuses a second version with the same number
            session.execute(insert(HQ_VERSION), versions)
        if outbox:  # none when no country is registered: the notice waits for a bootstrap
            session.execute(insert(_OUTBOX), outbox)

    def _outbox_rows(
        self, notice_id: str, payload: bytes, at: datetime, countries: Iterable[str]
    ) -> list[dict[str, Any]]:
        return [
            {
                "topic": self._names.notices(cc),
                "key": notice_id,
                "payload": payload,
                "created_at": at,
            }
            for cc in sorted(countries)
        ]

    def _store_unstored(self, session: Session, notice_ids: Sequence[str]) -> dict[str, bytes]:
        """Bytes for current versions made before HQ stored them (older databases): encoded
        once from ``hq_notice`` and stored, so every later send is the same bytes."""
        payloads: dict[str, bytes] = {}
        rows: list[dict[str, Any]] = []
        for i in range(0, len(notice_ids), CHUNK):
            query = select(_NOTICE).where(_NOTICE.c.notice_id.in_(notice_ids[i : i + CHUNK]))
            for n in session.execute(query):
                cancel = n.status == WITHDRAWN
                event = NoticeEvent(
                    notice_id=n.notice_id,
                    version=n.version,
                    action=_LEGACY_ACTION[(cancel, n.version == 1)],
                    requesting_country=n.requesting_country,
                    published_at=as_utc(n.updated_at),
                    target_countries=tuple(n.target_countries),
                    person=None if cancel else Person.from_avro(n.person or {}),
                )
                payload = self._codec.encode(event.to_avro())
                payloads[n.notice_id] = payload
                rows.append({"notice_id": n.notice_id, "version": n.version, "payload": payload})
        self._insert(session, rows, [])
        return payloads
