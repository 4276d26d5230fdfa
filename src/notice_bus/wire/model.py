"""Kafka wire types: what travels on the topics, as frozen dataclasses.

They mirror ``schemas/*.avsc`` one to one and know nothing of databases; the SQLModel tables that
store them live in each role's ``tables`` module.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

#: The reason an adapter gives a notice it withdraws locally because an update no longer
#: addresses its country. Such a withdrawal is not final: a later version that addresses the
#: country again makes the notice active again there (a CANCEL, from HQ, is final).
NOT_ADDRESSED = "no longer addressed to this country"
#: The status of a notice in HQ's records and in every national copy.
ACTIVE = "ACTIVE"
WITHDRAWN = "WITHDRAWN"


class Action(StrEnum):
    PUBLISH = "PUBLISH"
    UPDATE = "UPDATE"
    CANCEL = "CANCEL"


class AckStatus(StrEnum):
    RECEIVED = "RECEIVED"
    RECORDED = "RECORDED"
    REJECTED = "REJECTED"


class Answer(StrEnum):
    """A bureau's own answer to a notice."""

    NO_TRACE = "NO_TRACE"
    LOCATED = "LOCATED"
    ARRESTED = "ARRESTED"
    CANNOT_ACT = "CANNOT_ACT"


class Overdue(StrEnum):
    NOT_RECORDED = "NOT_RECORDED"
    NOT_ANSWERED = "NOT_ANSWERED"


@dataclass(frozen=True, slots=True)
class ArrestWarrant:
    issuing_country_id: str
    charge: str
    charge_translation: str | None = None


@dataclass(frozen=True, slots=True)
class Person:
    """The wanted person, in the fields of INTERPOL's public notices API.

    A list in :data:`NULLABLE_LISTS` is None when unknown (INTERPOL's null) and ``()`` when
    known to be empty: a person of unknown nationality is not a stateless one.
    """

    name: str
    forename: str | None = None
    date_of_birth: str | None = None
    sex_id: str | None = None
    nationalities: tuple[str, ...] | None = ()
    country_of_birth_id: str | None = None
    place_of_birth: str | None = None
    distinguishing_marks: str | None = None
    height: float | None = None
    weight: float | None = None
    eyes_colors_id: tuple[str, ...] | None = ()
    hairs_id: tuple[str, ...] | None = ()
    languages_spoken_ids: tuple[str, ...] | None = ()
    arrest_warrants: tuple[ArrestWarrant, ...] = ()
    images: tuple[str, ...] | None = ()

    def to_avro(self) -> dict[str, Any]:
        """The fields as plain values, an unknown list as None: the JSON form (HQ's record,
        plug-ins' documents). :meth:`NoticeEvent.to_avro` puts unknown lists on the wire."""
        out = {name: getattr(self, name) for name in _PERSON_FIELDS}
        for name, value in out.items():
            if isinstance(value, tuple):
                out[name] = list(value)
        out["arrest_warrants"] = [
            {
                "issuing_country_id": w.issuing_country_id,
                "charge": w.charge,
                "charge_translation": w.charge_translation,
            }
            for w in self.arrest_warrants
        ]
        return out

    @classmethod
    def from_avro(cls, data: dict[str, Any]) -> Person:
        """From :meth:`to_avro`'s form, or from the wire's (``unknown_lists``)."""
        # Names looked up in a set, and only the lists converted: per field, a scan of the
        # field names and an isinstance were two thirds of this (a bulk load runs it per row).
        values = {k: v for k, v in data.items() if k in _PERSON_FIELD_SET}
        for name in NULLABLE_LISTS:
            value = values.get(name)
            if value is not None:
                values[name] = tuple(value)
        for name in data.get("unknown_lists") or ():
            if name in NULLABLE_LISTS:  # a name from a newer schema is not ours to know
                values[name] = None
        values["arrest_warrants"] = tuple(
            ArrestWarrant(
                issuing_country_id=w["issuing_country_id"],
                charge=w["charge"],
                charge_translation=w.get("charge_translation"),
            )
            for w in data.get("arrest_warrants") or ()
        )
        return cls(**values)


#: The person's lists that may be unknown (None). On the wire an unknown list is sent empty and
#: named in ``unknown_lists``: an older reader, which cannot resolve a null against an array,
#: keeps reading it.
NULLABLE_LISTS = ("nationalities", "eyes_colors_id", "hairs_id", "languages_spoken_ids", "images")

# Looked up once: dataclasses.fields() per call was a tenth of a bulk load's time.
_PERSON_FIELDS = tuple(f.name for f in dataclasses.fields(Person))
_PERSON_FIELD_SET = frozenset(_PERSON_FIELDS)


def _person_to_wire(person: Person) -> dict[str, Any]:
    out = person.to_avro()
    unknown = [name for name in NULLABLE_LISTS if out[name] is None]
    for name in unknown:
        out[name] = []
    out["unknown_lists"] = unknown
    return out


@dataclass(frozen=True, slots=True)
class NoticeEvent:
    """One version of a red notice: its publication, an update, or its cancellation."""

    notice_id: str
    version: int
    action: Action
    requesting_country: str
    published_at: datetime
    target_countries: tuple[str, ...] = ()
    person: Person | None = None
    reason: str | None = None
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def targets(self, country: str) -> bool:
        """Whether the notice is meant for ``country`` (no targets means every country)."""
        return not self.target_countries or country in self.target_countries

    def to_avro(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "notice_id": self.notice_id,
            "version": self.version,
            "action": self.action.value,
            "published_at": self.published_at,
            "requesting_country": self.requesting_country,
            "target_countries": list(self.target_countries),
            "person": _person_to_wire(self.person) if self.person else None,
            "reason": self.reason,
        }

    @classmethod
    def from_avro(cls, data: dict[str, Any]) -> NoticeEvent:
        person = data.get("person")
        return cls(
            event_id=data["event_id"],
            notice_id=data["notice_id"],
            version=data["version"],
            action=Action(data["action"]),
            published_at=aware(data["published_at"]),
            requesting_country=data["requesting_country"],
            target_countries=tuple(data["target_countries"]),
            person=Person.from_avro(person) if person else None,
            reason=data.get("reason"),
        )


@dataclass(frozen=True, slots=True)
class Ack:
    """A country adapter's acknowledgement of one notice event, and of the events in
    ``also`` ((notice_id, version) pairs of the same batch, with the same status and times).

    A RECORDED with ``received_at`` stands for the RECEIVED of its events too: the adapter
    sends RECEIVED on its own only when the write has to wait.
    """

    country: str
    notice_id: str
    version: int
    status: AckStatus
    at: datetime
    adapter_id: str
    reason: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    received_at: datetime | None = None
    also: tuple[tuple[str, int], ...] = ()

    def events(self) -> list[tuple[str, int]]:
        """Every (notice_id, version) this acknowledgement stands for."""
        return [(self.notice_id, self.version), *self.also]

    def to_avro(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in _ACK_FIELDS}
        out["status"] = self.status.value
        out["also"] = [{"notice_id": n, "version": v} for n, v in self.also]
        return out

    @classmethod
    def from_avro(cls, data: dict[str, Any]) -> Ack:
        values = {k: v for k, v in data.items() if k in _ACK_FIELDS}
        values["status"] = AckStatus(values["status"])
        values["at"] = aware(values["at"])
        if values.get("received_at") is not None:
            values["received_at"] = aware(values["received_at"])
        values["also"] = tuple((e["notice_id"], e["version"]) for e in values.get("also", ()))
        return cls(**values)


_ACK_FIELDS = frozenset(f.name for f in dataclasses.fields(Ack))


@dataclass(frozen=True, slots=True)
class Response:
    """A bureau's answer to a notice, from an officer or from its local system."""

    country: str
    notice_id: str
    answer: Answer
    at: datetime
    responder: str
    text: str | None = None

    def to_avro(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["answer"] = self.answer.value
        return out

    @classmethod
    def from_avro(cls, data: dict[str, Any]) -> Response:
        return cls(
            country=data["country"],
            notice_id=data["notice_id"],
            answer=Answer(data["answer"]),
            at=aware(data["at"]),
            responder=data["responder"],
            text=data.get("text"),
        )


@dataclass(frozen=True, slots=True)
class Reminder:
    """HQ's reminder to a bureau that a notice is overdue."""

    country: str
    notice_id: str
    version: int
    kind: Overdue
    deadline: datetime
    at: datetime
    text: str

    def to_avro(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["kind"] = self.kind.value
        return out

    @classmethod
    def from_avro(cls, data: dict[str, Any]) -> Reminder:
        return cls(
            country=data["country"],
            notice_id=data["notice_id"],
            version=data["version"],
            kind=Overdue(data["kind"]),
            deadline=aware(data["deadline"]),
            at=aware(data["at"]),
            text=data["text"],
        )


def utcnow() -> datetime:
    """The default clock: aware UTC, millisecond precision (what Avro timestamp-millis keeps)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def aware(value: datetime) -> datetime:
    """``value`` as aware UTC: Avro and SQLite give naive UTC datetimes."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
