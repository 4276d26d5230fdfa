"""SQLModel tables, one group per role: a country's local copy, HQ's records, the tracker.

These are storage types; the wire types are in :mod:`notice_bus.model`. Times are stored as UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, LargeBinary, Table, text
from sqlmodel import Field, SQLModel

ACTIVE = "ACTIVE"
WITHDRAWN = "WITHDRAWN"


def _ts(**kw: Any) -> Any:
    return Field(sa_column=Column(DateTime(timezone=True), **kw))


def _json() -> Any:
    return Field(default_factory=list, sa_column=Column(JSON, nullable=False))


def _json_list_or_null() -> Any:
    """A list that may be unknown: SQL NULL, not JSON null, so ``IS NULL`` finds it alike on
    PostgreSQL and SQLite (and ``[]`` stays a known empty list)."""
    return Field(default=None, sa_column=Column(JSON(none_as_null=True), nullable=True))


# --- a country's local information system ---------------------------------------------------


class RedNotice(SQLModel, table=True):
    """A country's copy of a red notice, at the highest version it has received."""

    __tablename__ = "red_notice"

    notice_id: str = Field(primary_key=True, max_length=16)
    version: int
    status: str = Field(max_length=10, index=True)
    requesting_country: str = Field(max_length=2)
    name: str | None = None  # None on a withdrawn notice this country never had
    forename: str | None = None
    date_of_birth: str | None = Field(default=None, max_length=10)
    sex_id: str | None = Field(default=None, max_length=1)
    nationalities: list[str] | None = _json_list_or_null()
    country_of_birth_id: str | None = Field(default=None, max_length=2)
    place_of_birth: str | None = None
    distinguishing_marks: str | None = None
    height: float | None = None
    weight: float | None = None
    eyes_colors_id: list[str] | None = _json_list_or_null()
    hairs_id: list[str] | None = _json_list_or_null()
    languages_spoken_ids: list[str] | None = _json_list_or_null()
    arrest_warrants: list[dict[str, Any]] = _json()
    images: list[str] | None = _json_list_or_null()
    withdrawn_reason: str | None = None
    event_id: str = Field(max_length=36)
    published_at: datetime = _ts(nullable=False)
    recorded_at: datetime = _ts(nullable=False)


class LocalResponse(SQLModel, table=True):
    """A bureau's answer to a notice, entered in its local system; the adapter sends each one
    to HQ and stamps ``sent_at`` once the broker has it."""

    __tablename__ = "notice_response"
    __table_args__ = (Index("ix_notice_response_pending", "sent_at", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    notice_id: str = Field(max_length=16)
    answer: str = Field(max_length=12)  # NO_TRACE, LOCATED, ARRESTED, CANNOT_ACT
    text: str | None = None
    responder: str = "local-system"
    answered_at: datetime = _ts(nullable=False)
    sent_at: datetime | None = _ts(nullable=True)


class LocalReminder(SQLModel, table=True):
    """HQ's reminders of overdue notices, surfaced in the local system for its officers."""

    __tablename__ = "notice_reminder"

    id: int | None = Field(default=None, primary_key=True)
    notice_id: str = Field(max_length=16, index=True)
    version: int
    kind: str = Field(max_length=12)
    deadline: datetime = _ts(nullable=False)
    reminded_at: datetime = _ts(nullable=False)
    text: str


# --- HQ ----------------------------------------------------------------------------------------


class HQNotice(SQLModel, table=True):
    """HQ's record of every notice it has published, at its current version."""

    __tablename__ = "hq_notice"

    notice_id: str = Field(primary_key=True, max_length=16)
    version: int
    status: str = Field(max_length=10)
    requesting_country: str = Field(max_length=2)
    target_countries: list[str] = _json()
    person: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    updated_at: datetime = _ts(nullable=False)


class OutboxRecord(SQLModel, table=True):
    """A Kafka record waiting to be sent: written in the same transaction as the notice, sent
    and marked by the relay, so a crash between the database and Kafka loses nothing."""

    __tablename__ = "hq_outbox"
    __table_args__ = (
        Index("ix_hq_outbox_pending", "sent_at", "id"),
        # Every country a notice ever went to, for its updates and its cancel.
        Index("ix_hq_outbox_key_topic", "key", "topic"),
    )

    id: int | None = Field(default=None, primary_key=True)
    topic: str
    key: str
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = _ts(nullable=False)
    sent_at: datetime | None = _ts(nullable=True)


class HQVersion(SQLModel, table=True):
    """Every version of every notice HQ ever made, with the exact bytes it sent: the key makes
    a second, different version with the same number impossible, and a late country (bootstrap,
    catch-up) gets the very bytes of the current version."""

    __tablename__ = "hq_version"

    notice_id: str = Field(primary_key=True, max_length=16)
    version: int = Field(primary_key=True)
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


# --- the tracker -------------------------------------------------------------------------------


class SentEvent(SQLModel, table=True):
    """A notice event HQ delivered to a country's topic, dated by HQ and by the broker."""

    __tablename__ = "tracker_sent"
    __table_args__ = (
        Index(
            "ix_sent_waiting",
            "country",
            "broker_at",
            postgresql_where=text("recorded_at IS NULL AND NOT rejected"),
            sqlite_where=text("recorded_at IS NULL AND NOT rejected"),
        ),
        Index("ix_sent_position", "country", "partition", "offset"),
    )

    country: str = Field(primary_key=True, max_length=2)
    notice_id: str = Field(primary_key=True, max_length=16)
    version: int = Field(primary_key=True)
    action: str = Field(max_length=8)
    published_at: datetime = _ts(nullable=False)
    broker_at: datetime = _ts(nullable=False)
    #: Where it sits in the country's topic: the age of the record at a consumer group's
    #: committed offset is the group's time lag, read here rather than interpolated.
    partition: int = -1
    offset: int = -1
    # What became of it, kept here by the tracker as acks and answers arrive, so the report
    # reads one table instead of joining a million acknowledgements (broker times).
    received_at: datetime | None = _ts(nullable=True)
    recorded_at: datetime | None = _ts(nullable=True)
    rejected: bool = False
    #: A later version of the notice was sent to the country.
    superseded: bool = False
    #: When the country first got any version of the notice, and first answered it.
    first_at: datetime | None = _ts(nullable=True)
    answered_at: datetime | None = _ts(nullable=True)


class AckEvent(SQLModel, table=True):
    """An acknowledgement from a country, dated by the country and by the broker."""

    __tablename__ = "tracker_ack"
    __table_args__ = (Index("ix_ack_broker_at", "broker_at"),)

    country: str = Field(primary_key=True, max_length=2)
    notice_id: str = Field(primary_key=True, max_length=32)
    version: int = Field(primary_key=True)
    status: str = Field(primary_key=True, max_length=10)
    #: "partition:offset" of the rejected record for REJECTED, so that two bad records of one
    #: notice count twice and a replayed one once; empty for the other statuses.
    position: str = Field(default="", primary_key=True, max_length=32)
    at: datetime = _ts(nullable=False)
    broker_at: datetime = _ts(nullable=False)
    adapter_id: str
    reason: str | None = None


class ResponseEvent(SQLModel, table=True):
    """A bureau's own answer to a notice; the first answer of each kind is kept."""

    __tablename__ = "tracker_response"

    country: str = Field(primary_key=True, max_length=2)
    notice_id: str = Field(primary_key=True, max_length=16)
    answer: str = Field(primary_key=True, max_length=12)
    text: str | None = None
    responder: str
    at: datetime = _ts(nullable=False)
    broker_at: datetime = _ts(nullable=False)


class GroupSample(SQLModel, table=True):
    """A look at a country's consumer group from the broker's side, taken by the tracker
    every few seconds: how far its committed offsets are behind the topic's end, and whether
    anyone is in the group. Health comes from a window of these, whatever the acks say."""

    __tablename__ = "tracker_group_sample"
    __table_args__ = (Index("ix_group_sample_country_at", "country", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    country: str = Field(max_length=2)
    at: datetime = _ts(nullable=False)
    end_offset: int
    committed: int | None = None  # None: the group never committed anything
    members: int
    time_lag_s: float | None = None


class Incident(SQLModel, table=True):
    """An overdue country, from its first overdue notice until it has none, as escalated."""

    __tablename__ = "tracker_incident"

    id: int | None = Field(default=None, primary_key=True)
    country: str = Field(max_length=2, index=True)
    kind: str = Field(max_length=12)
    opened_at: datetime = _ts(nullable=False)
    open_sent: bool = False
    closed_at: datetime | None = _ts(nullable=True)
    close_sent: bool = False
    detail: str = ""


class ReminderSent(SQLModel, table=True):
    """When HQ last reminded a country of an overdue notice, so reminders are not repeated
    more often than ``reminder_interval_s``."""

    __tablename__ = "tracker_reminder"

    country: str = Field(primary_key=True, max_length=2)
    notice_id: str = Field(primary_key=True, max_length=16)
    kind: str = Field(primary_key=True, max_length=12)
    sent_at: datetime = _ts(nullable=False)


class QuarantinedRecord(SQLModel, table=True):
    """A record of a country's topic that the tracker cannot store (it does not decode, or its
    fields do not fit), kept with its bytes and why instead of stopping the tracker. Keyed by
    its position, so a replay stores it once."""

    __tablename__ = "tracker_quarantine"

    topic: str = Field(primary_key=True, max_length=255)
    partition: int = Field(primary_key=True)
    offset: int = Field(sa_column=Column(BigInteger, primary_key=True))
    reason: str
    broker_at: datetime = _ts(nullable=False)
    raw: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


def _table(model: type[SQLModel]) -> Table:
    table: Table = model.__table__  # type: ignore[attr-defined]
    return table


RED_NOTICE = _table(RedNotice)
HQ_NOTICE = _table(HQNotice)
OUTBOX = _table(OutboxRecord)
HQ_VERSION = _table(HQVersion)
SENT = _table(SentEvent)
ACK = _table(AckEvent)
RESPONSE = _table(ResponseEvent)
GROUP_SAMPLE = _table(GroupSample)
INCIDENT = _table(Incident)
REMINDER_SENT = _table(ReminderSent)
QUARANTINE = _table(QuarantinedRecord)
LOCAL_RESPONSE = _table(LocalResponse)
LOCAL_REMINDER = _table(LocalReminder)
LOCAL_TABLES = [RED_NOTICE, LOCAL_RESPONSE, LOCAL_REMINDER]
HQ_TABLES = [HQ_NOTICE, OUTBOX, HQ_VERSION]
TRACKER_TABLES = [SENT, ACK, RESPONSE, GROUP_SAMPLE, INCIDENT, REMINDER_SENT, QUARANTINE]
