"""HQ's review of the bureaus' requests: the queue, and the decisions on it.

A request is stored once as it arrives (:meth:`Review.receive`), with its screening findings,
and is then HELD for a reviewer, or decided at once: INVALID when it is not a notice HQ could
publish, APPROVED when it is clean and ``auto_publish_clean`` is on. A reviewer approves a held
request (it is published exactly as ``notice-bus publish`` does) or refuses it (nothing goes to
any country). A decision is final: the status moves from HELD only, in the same transaction as
everything it causes (the notice's versions and outbox rows, the audit entries, the decision
for the requesting bureau), so two reviewers cannot both decide, and a crash leaves either
all of it or none. The decision reaches the bureau through HQ's outbox on ``decisions.CC``,
signed like a notice.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from notice_bus.errors import AlreadyDecided, HQStateError, InvalidNotice, UnknownRequest
from notice_bus.hq import audit
from notice_bus.hq.publisher import HQ
from notice_bus.hq.store import write
from notice_bus.hq.tables import HQ_NOTICE, HQ_REQUEST, HQRequest, OutboxRecord
from notice_bus.runtime.db import translate_errors
from notice_bus.wire.codec import AvroCodec, SchemaStore, load_schema
from notice_bus.wire.model import NoticeEvent, aware, utcnow
from notice_bus.wire.request import AUTO_PUBLISH, Decision, RequestStatus
from notice_bus.wire.schema_registry import KafkaSchemaStore
from notice_bus.wire.topics import TopicNames
from notice_bus.wire.validation import Draft, check_draft

_REQUEST: Any = HQ_REQUEST
_NOTICE: Any = HQ_NOTICE
log = logging.getLogger("notice_bus.hq.review")


@dataclasses.dataclass(frozen=True, slots=True)
class Arrival:
    """A request as it arrived, before HQ decides anything about it."""

    request_id: str
    source: str  # topic:partition:offset
    country: str  # the topic's: the requester
    received_at: datetime
    notice: dict[str, Any]  # the notice's JSON object ({} when unreadable)
    facts: str | None = None
    person_status: str | None = None
    requester: str | None = None

    @property
    def notice_id(self) -> str:
        raw = self.notice.get("notice_id", self.notice.get("entity_id"))
        return raw.replace("-", "/")[:16] if isinstance(raw, str) else ""

    @property
    def claimed_country(self) -> str | None:
        claimed = self.notice.get("requesting_country")
        return claimed[:2] if isinstance(claimed, str) and claimed else None


def draft_of(notice: dict[str, Any], country: str) -> Draft:
    """The draft a request's notice stands for, its requester the topic's country; raises
    :class:`InvalidNotice` listing every problem."""
    draft, problems = check_draft(notice)
    if problems or draft is None:
        first, *rest = problems or [InvalidNotice("not a notice")]
        raise InvalidNotice(
            "\n".join([first.reason, *map(str, rest)]),
            field=first.field,
            notice_id=first.notice_id,
        )
    return dataclasses.replace(draft, requesting_country=country)


class Review:
    """The review queue over HQ's database, and the decisions that leave it."""

    def __init__(
        self,
        hq: HQ,
        *,
        clock: Callable[[], datetime] = utcnow,
        schemas: SchemaStore | None = None,
    ) -> None:
        self.hq = hq
        self.engine = hq.engine
        self._clock = clock
        self._names = TopicNames(hq.settings.topic_prefix)
        store = schemas if schemas is not None else KafkaSchemaStore(hq.settings)
        self._codec = AvroCodec(load_schema("request_decision"), store)

    # -- reading ------------------------------------------------------------------------

    def waiting(self) -> list[HQRequest]:
        """Requests held for a reviewer, oldest first."""
        return self.requests(RequestStatus.HELD)

    def requests(self, status: RequestStatus | None = None, limit: int = 500) -> list[HQRequest]:
        """Requests, oldest first; of one ``status`` if given."""
        query = select(HQRequest).order_by(_REQUEST.c.received_at).limit(limit)
        if status is not None:
            query = query.where(_REQUEST.c.status == status.value)
        with translate_errors(str(self.engine.url)), Session(self.engine) as session:
            return list(session.scalars(query))

    def get(self, request_id: str) -> HQRequest:
        with translate_errors(str(self.engine.url)), Session(self.engine) as session:
            found = session.get(HQRequest, request_id)
        if found is None:
            raise UnknownRequest(f"no request {request_id!r} reached HQ")
        return found

    # -- deciding -----------------------------------------------------------------------

    def receive(
        self,
        arrival: Arrival,
        findings: Sequence[dict[str, str]],
        problem: str | None,
        *,
        auto_publish: bool,
    ) -> Decision | None:
        """Store a request that just arrived and decide what can be decided at once: INVALID
        with ``problem``, APPROVED if clean and ``auto_publish``, else HELD. ``None`` if this
        record was taken in already (read again after a crash)."""
        with translate_errors(str(self.engine.url)), self.engine.connect() as conn:
            seen = conn.execute(
                select(_REQUEST.c.source, _REQUEST.c.draft).where(
                    (_REQUEST.c.source == arrival.source)
                    | (_REQUEST.c.request_id == arrival.request_id)
                )
            ).first()
        if seen is not None:
            if seen.source == arrival.source or seen.draft == arrival.notice:
                return None  # read again after a crash, or the same request sent again
            return self._reused(arrival)
        problem = problem or self._not_theirs(arrival)
        if problem is None and not findings and auto_publish:
            try:
                draft = draft_of(arrival.notice, arrival.country)
                return self._approve(arrival, findings, draft, AUTO_PUBLISH, None)
            except (InvalidNotice, HQStateError) as exc:  # no topic for a target; cancelled
                problem = str(exc)
        status = RequestStatus.INVALID if problem else RequestStatus.HELD
        decision = self._decision(arrival, status, "hq" if problem else "", problem, findings)
        write(self.engine, lambda s: self._store(s, arrival, findings, decision))
        self.hq.relay()
        return decision

    def approve(self, request_id: str, reviewer: str, note: str = "") -> Decision:
        """Publish a held request's notice exactly as ``publish`` does, and tell the bureau."""
        row = self._held(request_id)
        arrival = _arrival_of(row)
        problem = self._not_theirs(arrival)
        if problem is not None:
            raise HQStateError(problem)
        draft = draft_of(arrival.notice, row.country)
        return self._approve(arrival, row.findings, draft, reviewer, note or None, held=True)

    def refuse(self, request_id: str, reviewer: str, reason: str) -> Decision:
        """Refuse a held request: nothing goes to any country; the bureau is told why."""
        if not reason.strip():
            raise InvalidNotice("a refusal needs a reason", field="reason")
        row = self._held(request_id)
        decision = self._decision(
            _arrival_of(row), RequestStatus.REFUSED, reviewer, reason, row.findings
        )
        write(self.engine, lambda s: self._decide(s, decision))
        self.hq.relay()
        return decision

    def _approve(
        self,
        arrival: Arrival,
        findings: Sequence[dict[str, str]],
        draft: Draft,
        by: str,
        note: str | None,
        *,
        held: bool = False,
    ) -> Decision:
        decision = self._decision(arrival, RequestStatus.APPROVED, by, note, findings)

        def record(session: Session, events: list[NoticeEvent]) -> None:
            if held:
                self._decide(session, decision)
            else:
                self._store(session, arrival, findings, decision)
            for e in events:
                audit.append(
                    session.connection(),
                    kind=audit.Kind.PUBLICATION,
                    actor="hq",
                    at=decision.at,
                    request_id=arrival.request_id,
                    notice_id=e.notice_id,
                    detail={
                        "action": e.action.value,
                        "version": e.version,
                        "target_countries": list(e.target_countries),
                    },
                )

        self.hq.publish([draft], relay=False, also=record)
        self.hq.relay()
        return decision

    def _not_theirs(self, arrival: Arrival) -> str | None:
        """Why the requester may not ask for this notice: another country's, which only
        that country's bureau may have changed."""
        with translate_errors(str(self.engine.url)), self.engine.connect() as conn:
            owner = conn.execute(
                select(_NOTICE.c.requesting_country).where(_NOTICE.c.notice_id == arrival.notice_id)
            ).scalar()
        if owner is None or owner == arrival.country:
            return None
        return (
            f"notice {arrival.notice_id} was requested by {owner}; only {owner}'s bureau may"
            " ask HQ to change it"
        )

    def _reused(self, arrival: Arrival) -> Decision:
        """A request id used already for another request: the bureau is told, and the
        first request stays as it is."""
        reason = f"request id {arrival.request_id} was used already for another request"
        # Under an id of its own: the first request's decisions keep theirs.
        again = dataclasses.replace(
            arrival, request_id=f"{arrival.request_id[:40]}#{arrival.source}"[:64]
        )
        decision = self._decision(again, RequestStatus.INVALID, "hq", reason, ())
        log.warning("review: %s from %s", decision.reason, arrival.country)
        write(self.engine, lambda s: self._tell(s, decision))
        self.hq.relay()
        return decision

    def _held(self, request_id: str) -> HQRequest:
        row = self.get(request_id)
        if row.status != RequestStatus.HELD:
            raise AlreadyDecided(
                f"request {request_id} was decided already: {row.status} by {row.decided_by}"
                f" at {row.decided_at:%Y-%m-%d %H:%M:%S}"
                if row.decided_at
                else f"request {request_id} was decided already: {row.status}"
            )
        return row

    def _decision(
        self,
        arrival: Arrival,
        status: RequestStatus,
        by: str,
        reason: str | None,
        findings: Sequence[dict[str, str]],
    ) -> Decision:
        return Decision(
            request_id=arrival.request_id,
            notice_id=arrival.notice_id,
            requesting_country=arrival.country,
            status=status,
            received_at=arrival.received_at,
            at=self._clock(),
            decided_by=by,
            reason=reason,
            findings=tuple(dict(f) for f in findings),
        )

    def _store(
        self,
        session: Session,
        arrival: Arrival,
        findings: Sequence[dict[str, str]],
        decision: Decision,
    ) -> None:
        """The request's row, its REQUEST and FINDING entries, and its first decision."""
        session.add(
            HQRequest(
                request_id=arrival.request_id,
                source=arrival.source,
                country=arrival.country,
                claimed_country=arrival.claimed_country,
                notice_id=arrival.notice_id,
                draft=arrival.notice,
                facts=arrival.facts,
                person_status=arrival.person_status,
                findings=[dict(f) for f in findings],
                status=RequestStatus.HELD.value,
                received_at=arrival.received_at,
            )
        )
        session.flush()
        conn = session.connection()
        notice = json.dumps(arrival.notice, sort_keys=True, ensure_ascii=False)
        audit.append(
            conn,
            kind=audit.Kind.REQUEST,
            actor=f"bureau:{arrival.country}"
            + (f"/{arrival.requester}" if arrival.requester else ""),
            at=arrival.received_at,
            request_id=arrival.request_id,
            notice_id=arrival.notice_id or None,
            detail={
                "source": arrival.source,
                "claimed_country": arrival.claimed_country,
                "notice": notice,
                "facts": arrival.facts,
                "person_status": arrival.person_status,
            },
        )
        for f in findings:
            audit.append(
                conn,
                kind=audit.Kind.FINDING,
                actor="screening",
                at=arrival.received_at,
                request_id=arrival.request_id,
                notice_id=arrival.notice_id or None,
                detail=dict(f),
            )
        if decision.status is not RequestStatus.HELD:
            self._decide(session, decision)
        else:
            self._tell(session, decision)

    def _decide(self, session: Session, decision: Decision) -> None:
        """Move the request from HELD to the decision, record it, and tell the bureau."""
        done = session.execute(
            update(_REQUEST)
            .where(_REQUEST.c.request_id == decision.request_id)
            .where(_REQUEST.c.status == RequestStatus.HELD.value)
            .values(
                status=decision.status.value,
                decided_at=decision.at,
                decided_by=decision.decided_by,
                reason=decision.reason,
            )
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            raise AlreadyDecided(f"request {decision.request_id} was decided meanwhile")
        audit.append(
            session.connection(),
            kind=audit.Kind.DECISION,
            actor=decision.decided_by,
            at=decision.at,
            request_id=decision.request_id,
            notice_id=decision.notice_id or None,
            detail={"status": decision.status.value, "reason": decision.reason},
        )
        self._tell(session, decision)

    def _tell(self, session: Session, decision: Decision) -> None:
        """The decision for the requesting bureau, in HQ's outbox (sent and signed by relay)."""
        session.add(
            OutboxRecord(
                topic=self._names.decisions(decision.requesting_country),
                key=decision.request_id,
                payload=self._codec.encode(decision.to_avro()),
                created_at=decision.at,
            )
        )


def _arrival_of(row: HQRequest) -> Arrival:
    return Arrival(
        request_id=row.request_id,
        source=row.source,
        country=row.country,
        received_at=aware(row.received_at),
        notice=row.draft,
        facts=row.facts,
        person_status=row.person_status,
    )
