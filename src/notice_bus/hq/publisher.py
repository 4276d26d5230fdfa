"""HQ: publishes, updates and cancels red notices through a transactional outbox.

A call writes the notice's new version and one outbox row per country in a single database
transaction; the relay then sends the outbox rows with the idempotent producer (acks=all) and
marks them sent. A crash between the two leaves rows unsent, and the next relay (any later
call, or ``notice-bus relay``) sends them: nothing is lost, and a row sent twice is the same
notice version, which every consumer takes in once.

A new notice goes to its targets (every registered country when it has none). An update or a
cancel goes to those of its new version and to every country that ever got any version of the
notice, so a country the notice no longer addresses learns so (its adapter withdraws its copy)
and a cancel reaches every copy. Several HQ processes may share HQ's database: see
:mod:`notice_bus.hq.store` for how they take turns.

HQ keeps its list of registered countries for ``country_refresh_s`` rather than listing every
topic on each call. A country registered meanwhile misses the broadcasts made with the old
list, so HQ remembers those broadcasts until its next look at the broker (at the latest when
it is closed) and sends every country that look finds new the current version of each.
Together with the newcomer's bootstrap, a country registered at any moment gets every
broadcast.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from kafka import KafkaProducer
from kafka.errors import KafkaError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from notice_bus.errors import (
    AlreadyCancelled,
    BrokerUnavailable,
    HQStateError,
    InvalidNotice,
    NoticeBusError,
)
from notice_bus.hq.store import RelayTurn, prepare, write
from notice_bus.hq.tables import HQ_NOTICE, HQ_TABLES, OUTBOX
from notice_bus.hq.writer import Writer
from notice_bus.runtime.db import make_engine, transaction, translate_errors
from notice_bus.runtime.kafka import (
    admin_client,
    announce_topics,
    corked,
    explain,
    kafka_config,
    retry_transient,
)
from notice_bus.runtime.settings import Settings
from notice_bus.trust.keyring_topic import hq_signer
from notice_bus.trust.signing import Signer
from notice_bus.wire.codec import AvroCodec, SchemaStore, load_schema
from notice_bus.wire.manifest import kind_header
from notice_bus.wire.model import NOT_ADDRESSED, WITHDRAWN, NoticeEvent, Person, utcnow
from notice_bus.wire.schema_registry import KafkaSchemaStore
from notice_bus.wire.topics import TopicNames, registered_countries
from notice_bus.wire.validation import Draft, check_draft, check_notice_id

log = logging.getLogger("notice_bus.hq")
_OUTBOX: Any = OUTBOX
_NOTICE: Any = HQ_NOTICE


def read_drafts(path: str | Path) -> list[Draft]:
    """Parse a JSON file holding one notice or a list.

    Raises one :class:`InvalidNotice` for the whole file, whose message lists every problem of
    every notice, one a line (``file[i]: notice N: field F: reason``); its ``field``,
    ``notice_id`` and ``source`` are those of the first problem, and its ``reason`` is the
    first problem's reason followed by the other lines."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidNotice(f"cannot read: {exc.strerror}", source=str(path)) from exc
    except json.JSONDecodeError as exc:
        raise InvalidNotice(f"not valid JSON: {exc}", source=str(path)) from exc
    items = data if isinstance(data, list) else [data]
    drafts = []
    problems: list[InvalidNotice] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"{path}[{i}]" if isinstance(data, list) else str(path)
        draft, found = check_draft(item)
        problems += [p.located(where) for p in found]
        if draft is None:
            continue
        if draft.notice_id in seen:
            problems.append(
                InvalidNotice("appears twice in the file", notice_id=draft.notice_id, source=where)
            )
        seen.add(draft.notice_id)
        drafts.append(draft)
    if problems:
        first, *rest = problems
        reason = "\n".join([first.reason, *map(str, rest)])
        raise InvalidNotice(
            reason, field=first.field, notice_id=first.notice_id, source=first.source
        )
    return drafts


class HQ:
    """HQ's side of notice-bus. Close it (or use ``with``) to release the producer.

    ``clock`` dates every version HQ makes; it is called once the notice's current version
    has been read (and locked)."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
        schemas: SchemaStore | None = None,
    ) -> None:
        self.settings = settings
        self.engine = make_engine(settings.hq_database_url, HQ_TABLES)
        prepare(self.engine)
        self._clock = clock
        self._names = TopicNames(settings.topic_prefix)
        store = schemas if schemas is not None else KafkaSchemaStore(settings)
        self._codec = AvroCodec(load_schema("notice_event"), store)
        self._producer: Any = None
        self._signer: Signer | None = None
        self._admin: Any = None
        self._known: list[str] | None = None
        self._looked_at = 0.0
        self._broadcasts: set[str] = set()  # notices broadcast with the current list
        self._relay_turn = RelayTurn(self.engine)
        self._writer = Writer(self._codec, self._names, clock, self._registered)

    def publish(
        self,
        drafts: Iterable[Draft],
        *,
        relay: bool = True,
        also: Callable[[Session, list[NoticeEvent]], None] | None = None,
    ) -> list[NoticeEvent]:
        """Publish new notices and update existing ones. A draft identical to the current
        version of its notice is skipped. Nothing is written unless every draft is acceptable.
        ``also`` writes more in the same transaction (a review's decision and its audit)."""
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

        def work(session: Session) -> tuple[list[NoticeEvent], set[str]]:
            events, broadcasts = self._writer.publish(session, drafts, countries)
            if also is not None:
                also(session, events)
            return events, broadcasts

        events, broadcasts = write(self.engine, work)
        self._broadcasts |= broadcasts  # committed: remembered for a newcomer
        if relay:
            self.relay()
        return events

    def cancel(self, notice_id: str, reason: str = "", *, relay: bool = True) -> NoticeEvent:
        """Withdraw a notice everywhere it was ever sent, and wherever it is now meant to go.
        The reason adapters give a notice no longer addressed to them is not accepted.

        A notice cancelled already raises :class:`AlreadyCancelled` (an :class:`HQStateError`)
        once the outbox is relayed (if ``relay``), so a cancel retried after a failed relay
        still gets the first one out."""
        try:
            check_notice_id(notice_id)
        except InvalidNotice as exc:
            raise InvalidNotice(exc.reason, field=exc.field, notice_id=notice_id) from None
        if reason.strip() == NOT_ADDRESSED:  # a country must tell a cancel from a retargeting
            raise InvalidNotice(
                "is reserved for notices no longer addressed to a country",
                field="reason",
                notice_id=notice_id,
            )
        countries = self._countries()
        try:
            event = write(
                self.engine, lambda s: self._writer.cancel(s, notice_id, reason, countries)
            )
        except HQStateError as exc:
            with translate_errors(str(self.engine.url)), self.engine.connect() as conn:
                status = conn.execute(
                    select(_NOTICE.c.status).where(_NOTICE.c.notice_id == notice_id)
                ).scalar()
            if status != WITHDRAWN:  # unknown to HQ
                raise
            if relay:
                self.relay()
            raise AlreadyCancelled(str(exc)) from exc  # a cancel is final: no race here
        if not event.target_countries:
            self._broadcasts.add(notice_id)
        if relay:
            self.relay()
        return event

    def bootstrap(self, country: str, *, relay: bool = True) -> int:
        """Send ``country`` (which joined late) the current version of every active notice
        meant for it, as the very bytes HQ made it with; cancelled notices are not sent.
        Returns how many were queued."""
        if country not in self._countries(fresh=True, bootstrapping=country):
            raise HQStateError(f"{country} has no topic; run `notice-bus topics init` first")
        queued = write(self.engine, lambda s: self._writer.bootstrap(s, country))
        if relay:
            self.relay()
        return queued

    def person(self, notice_id: str) -> Person | None:
        """The current person data HQ holds for a notice (``None`` if unknown or cancelled)."""
        with translate_errors(str(self.engine.url)), self.engine.connect() as conn:
            person = conn.execute(
                select(_NOTICE.c.person).where(_NOTICE.c.notice_id == notice_id)
            ).scalar()
        return Person.from_avro(person) if person else None

    def relay(self, batch: int = 1000) -> int:
        """Send every pending outbox row, oldest first; returns how many were sent. One relay
        at a time, across HQ processes too: a row is sent once (barring a crash before it is
        marked), and a notice's versions reach each topic in the order they were made."""
        sent = 0
        with self._relay_turn():
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

    def send_now(self, topic: str, records: Sequence[tuple[str, bytes]], kind: str) -> None:
        """Send ``records`` (key, value) to ``topic`` now, signed as the relay signs, with the
        record header that names their ``kind`` (:data:`~notice_bus.wire.manifest.KIND_HEADER`),
        and wait until the broker has each; :class:`BrokerUnavailable` if not. Not through the
        outbox: for records worth nothing once late (a manifest, its details), which a caller
        sends again rather than queue."""
        rows = [_Row(topic, key, value) for key, value in records]
        if rows:
            self._send(rows, kind_header(kind))

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

    def _countries(self, *, fresh: bool = False, bootstrapping: str = "") -> list[str]:
        """Registered countries, asked of the broker over one admin connection kept open when
        the list is older than ``country_refresh_s`` (or ``fresh`` is asked for). Countries
        found new get the current version of each broadcast made with the old list (a cancel,
        not the notice it withdrew; nothing if it now targets other countries), in their own
        transaction; ``bootstrapping`` does not, as the bootstrap that follows sends it
        everything committed so far."""
        due = time.monotonic() - self._looked_at >= self.settings.country_refresh_s
        if self._known is not None and not (fresh or due):
            return self._known
        countries = self._registered()
        known = countries if self._known is None else self._known
        added = sorted(set(countries) - set(known) - {bootstrapping})
        if added and self._broadcasts:
            ids = sorted(self._broadcasts)
            write(self.engine, lambda s: self._writer.catch_up(s, added, ids))
            log.info(
                "queued %d recent broadcasts for %s, registered meanwhile",
                len(ids),
                ", ".join(added),
            )
        self._known, self._looked_at, self._broadcasts = countries, time.monotonic(), set()
        return countries

    def _registered(self) -> list[str]:
        """The registered countries, asked now, over the admin connection kept open."""
        if self._admin is None:
            self._admin = admin_client(self.settings)
        try:
            return registered_countries(self.settings, self._admin)
        except BrokerUnavailable:
            self._admin.close()
            self._admin = None  # a fresh connection next time
            raise

    def _send(self, rows: Sequence[Any], extra: list[tuple[str, bytes]] | None = None) -> None:
        try:
            if self._producer is None:
                self._signer = hq_signer(self.settings)  # the keyring published first
                self._producer = KafkaProducer(
                    **kafka_config(self.settings, "notice-bus-hq", producer=True),  # idempotent
                    linger_ms=5,
                )
            producer, signer = self._producer, self._signer
            # Right after a broker restarts its partitions have no leader for a moment:
            # retried, not reported. A row sent twice is harmless (same key and version).
            retry_transient(
                self.settings, "sending to Kafka", lambda: _send_all(producer, rows, signer, extra)
            )
        except KafkaError as exc:
            raise BrokerUnavailable(
                f"sending to Kafka at {self.settings.bootstrap_servers} failed"
                f" ({explain(exc)}); the notices are kept in HQ's outbox and go out with the"
                " next `notice-bus relay`"
            ) from exc


class _Row(NamedTuple):
    """A record to send, shaped as an outbox row."""

    topic: str
    key: str
    payload: bytes


def _send_all(
    producer: Any,
    rows: Sequence[Any],
    signer: Signer | None,
    extra: list[tuple[str, bytes]] | None = None,
) -> None:
    """Send ``rows`` (outbox rows), signed by ``signer``, with the ``extra`` headers, and wait
    until the broker has every one. An event goes to many countries: it is signed once (the
    topic is not signed)."""
    announce_topics(producer, {r.topic for r in rows})
    signed: dict[tuple[str, bytes], list[tuple[str, bytes]] | None] = {}
    with corked(producer):
        futures = []
        for r in rows:
            key = r.key.encode()
            headers = signed.get((r.key, r.payload))
            if headers is None and signer is not None:
                headers = signed[(r.key, r.payload)] = signer.headers(key, r.payload)
            if extra:
                headers = [*(headers or ()), *extra]
            futures.append(producer.send(r.topic, key=key, value=r.payload, headers=headers))
    producer.flush(timeout=60)
    for f in futures:
        f.get(timeout=60)
