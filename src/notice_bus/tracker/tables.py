"""The tracker's store: what HQ sent, every acknowledgement and answer, HQ's decisions on the
bureaus' requests, the bureaus' copy checks, consumer-group samples, incidents, reminders sent,
quarantined records and security events. Storage types; the wire
types are in :mod:`notice_bus.wire.model`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, Index, LargeBinary, text
from sqlmodel import Field, SQLModel

from notice_bus.runtime.columns import table_of, ts_column
from notice_bus.runtime.migrations import register


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
    published_at: datetime = ts_column(nullable=False)
    broker_at: datetime = ts_column(nullable=False)
    #: Where it sits in the country's topic: the age of the record at a consumer group's
    #: committed offset is the group's time lag, read here rather than interpolated.
    partition: int = -1
    offset: int = -1
    # What became of it, kept here by the tracker as acks and answers arrive, so the report
    # reads one table instead of joining a million acknowledgements (broker times).
    received_at: datetime | None = ts_column(nullable=True)
    recorded_at: datetime | None = ts_column(nullable=True)
    rejected: bool = False
    #: A later version of the notice was sent to the country.
    superseded: bool = False
    #: When the country first got any version of the notice, and first answered it.
    first_at: datetime | None = ts_column(nullable=True)
    answered_at: datetime | None = ts_column(nullable=True)


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
    at: datetime = ts_column(nullable=False)
    broker_at: datetime = ts_column(nullable=False)
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
    at: datetime = ts_column(nullable=False)
    broker_at: datetime = ts_column(nullable=False)


class GroupSample(SQLModel, table=True):
    """A look at a country's consumer group from the broker's side, taken by the tracker
    every few seconds: how far its committed offsets are behind the topic's end, and whether
    anyone is in the group. Health comes from a window of these, whatever the acks say."""

    __tablename__ = "tracker_group_sample"
    __table_args__ = (Index("ix_group_sample_country_at", "country", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    country: str = Field(max_length=2)
    at: datetime = ts_column(nullable=False)
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
    opened_at: datetime = ts_column(nullable=False)
    open_sent: bool = False
    closed_at: datetime | None = ts_column(nullable=True)
    close_sent: bool = False
    detail: str = ""


class ReminderSent(SQLModel, table=True):
    """When HQ last reminded a country of an overdue notice, so reminders are not repeated
    more often than ``reminder_interval_s``."""

    __tablename__ = "tracker_reminder"

    country: str = Field(primary_key=True, max_length=2)
    notice_id: str = Field(primary_key=True, max_length=16)
    kind: str = Field(primary_key=True, max_length=12)
    sent_at: datetime = ts_column(nullable=False)


class QuarantinedRecord(SQLModel, table=True):
    """A record of a country's topic that the tracker cannot store (it does not decode, or its
    fields do not fit), kept with its bytes and why instead of stopping the tracker. Keyed by
    its position, so a replay stores it once."""

    __tablename__ = "tracker_quarantine"

    topic: str = Field(primary_key=True, max_length=255)
    partition: int = Field(primary_key=True)
    offset: int = Field(sa_column=Column(BigInteger, primary_key=True))
    reason: str
    broker_at: datetime = ts_column(nullable=False)
    raw: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


class SecurityEvent(SQLModel, table=True):
    """An acknowledgement or answer whose MAC failed (none, another bureau's, or the record
    altered after signing): kept as evidence with its bytes and why, never counted as a
    delivery. Keyed by its position, so a replay stores it once."""

    __tablename__ = "tracker_security_event"
    __table_args__ = (Index("ix_security_event_country_broker_at", "country", "broker_at"),)

    topic: str = Field(primary_key=True, max_length=255)
    partition: int = Field(primary_key=True)
    offset: int = Field(sa_column=Column(BigInteger, primary_key=True))
    country: str = Field(max_length=2)
    kind: str = Field(max_length=16)  # "forged_ack" or "forged_response"
    reason: str
    broker_at: datetime = ts_column(nullable=False)
    raw: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


class RequestDecided(SQLModel, table=True):
    """A bureau's request for a notice as HQ's decisions on it tell (``decisions.CC``): held
    for a reviewer, then approved (published), refused, or invalid. One row per request; a
    final decision replaces HELD and is never replaced itself."""

    __tablename__ = "tracker_request"
    __table_args__ = (Index("ix_request_country_status", "country", "status"),)

    request_id: str = Field(primary_key=True, max_length=64)
    country: str = Field(max_length=2)  # the requesting country: its decisions topic's
    notice_id: str = Field(max_length=16)  # as the request named it; "" if unreadable
    status: str = Field(max_length=10)
    #: When the request reached HQ's requests topic (broker time).
    received_at: datetime = ts_column(nullable=False)
    #: HQ's clock at the final decision (for APPROVED, the publication); NULL while HELD.
    decided_at: datetime | None = ts_column(nullable=True)
    decided_by: str | None = Field(default=None, max_length=100)
    reason: str | None = None
    #: The rule ids of the screening's findings, comma-separated ("" for none).
    rules: str = ""
    #: When the first decision stored reached the decisions topic (broker time).
    broker_at: datetime = ts_column(nullable=False)


class CopyChecked(SQLModel, table=True):
    """A bureau's check of its national copy against one of HQ's manifests (a ``CopyCheck`` on
    its acks topic, :mod:`notice_bus.tracker.copies`): one row per check, keyed by country,
    manifest and the bureau's time of the check, so a replay stores nothing twice and a check
    of the same manifest again (after a mend) is a row of its own."""

    __tablename__ = "tracker_copy_check"
    __table_args__ = (Index("ix_copy_check_country_broker_at", "country", "broker_at"),)

    country: str = Field(primary_key=True, max_length=2)
    manifest_id: str = Field(primary_key=True, max_length=64)
    #: The bureau's clock when the check ended, and the broker's when its report arrived.
    at: datetime = ts_column(primary_key=True)
    broker_at: datetime = ts_column(nullable=False)
    status: str = Field(max_length=12)  # VERIFIED, DRIFT or UNVERIFIABLE
    held: int
    expected: int
    missing: int = 0
    extra: int = 0
    stale: int = 0
    resurrected: int = 0
    altered: int = 0
    mended: int = 0
    #: Up to 100 differences, JSON: [[notice_id, kind, mended], ...].
    examples: str = "[]"
    reason: str | None = None


SENT = table_of(SentEvent)
ACK = table_of(AckEvent)
RESPONSE = table_of(ResponseEvent)
GROUP_SAMPLE = table_of(GroupSample)
INCIDENT = table_of(Incident)
REMINDER_SENT = table_of(ReminderSent)
QUARANTINE = table_of(QuarantinedRecord)
SECURITY_EVENT = table_of(SecurityEvent)
REQUEST = table_of(RequestDecided)
COPY_CHECK = table_of(CopyChecked)
TRACKER_TABLES = [
    SENT,
    ACK,
    RESPONSE,
    GROUP_SAMPLE,
    INCIDENT,
    REMINDER_SENT,
    QUARANTINE,
    SECURITY_EVENT,
    REQUEST,
    COPY_CHECK,
]

register("tracker", TRACKER_TABLES, head="tracker_0004", baseline="tracker_0001", here=__file__)
