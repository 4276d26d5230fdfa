"""HQ's records: the current version of every notice, the outbox, every version sent, the
bureaus' requests under review, and the audit trail. Storage types; the wire types are in
:mod:`notice_bus.wire.model`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, LargeBinary
from sqlmodel import Field, SQLModel

from notice_bus.runtime.columns import json_list, table_of, ts_column
from notice_bus.runtime.migrations import register


class HQNotice(SQLModel, table=True):
    """HQ's record of every notice it has published, at its current version."""

    __tablename__ = "hq_notice"

    notice_id: str = Field(primary_key=True, max_length=16)
    version: int
    status: str = Field(max_length=10)
    requesting_country: str = Field(max_length=2)
    target_countries: list[str] = json_list()
    person: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    updated_at: datetime = ts_column(nullable=False)


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
    created_at: datetime = ts_column(nullable=False)
    sent_at: datetime | None = ts_column(nullable=True)


class HQVersion(SQLModel, table=True):
    """Every version of every notice HQ ever made, with the exact bytes it sent: the key makes
    a second, different version with the same number impossible, and a late country (bootstrap,
    catch-up) gets the very bytes of the current version."""

    __tablename__ = "hq_version"

    notice_id: str = Field(primary_key=True, max_length=16)
    version: int = Field(primary_key=True)
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class HQRequest(SQLModel, table=True):
    """A bureau's request for a notice, as HQ received and screened it, with its decision.

    ``country`` is the requesting country: the one of the topic it came on, whatever the
    request said (``claimed_country``). ``source`` (topic:partition:offset) makes taking the
    same record in twice, after a crash before its offset was committed, a no-op."""

    __tablename__ = "hq_request"
    __table_args__ = (Index("ix_hq_request_status", "status", "received_at"),)

    request_id: str = Field(primary_key=True, max_length=64)
    source: str = Field(max_length=300, unique=True)
    country: str = Field(max_length=2)
    claimed_country: str | None = Field(default=None, max_length=2)
    notice_id: str = Field(max_length=16, index=True)
    draft: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    facts: str | None = None
    person_status: str | None = Field(default=None, max_length=100)
    findings: list[dict[str, Any]] = json_list()
    status: str = Field(max_length=10)
    received_at: datetime = ts_column(nullable=False)
    decided_at: datetime | None = ts_column(nullable=True)
    decided_by: str | None = Field(default=None, max_length=100)
    reason: str | None = None


class HQAuditEntry(SQLModel, table=True):
    """One entry of HQ's append-only audit trail: a request, a finding, a decision or a
    publication. ``hash`` covers the entry's fields and ``prev_hash``, the previous entry's
    hash, so that editing or removing any entry breaks the chain from there on."""

    __tablename__ = "hq_audit"

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    at: datetime = ts_column(nullable=False)
    kind: str = Field(max_length=16)
    actor: str = Field(max_length=100)
    request_id: str | None = Field(default=None, max_length=64)
    notice_id: str | None = Field(default=None, max_length=16, index=True)
    detail: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


HQ_NOTICE = table_of(HQNotice)
OUTBOX = table_of(OutboxRecord)
HQ_VERSION = table_of(HQVersion)
HQ_REQUEST = table_of(HQRequest)
HQ_AUDIT = table_of(HQAuditEntry)
HQ_TABLES = [HQ_NOTICE, OUTBOX, HQ_VERSION, HQ_REQUEST, HQ_AUDIT]

register("hq", HQ_TABLES, head="hq_0002", baseline="hq_0001", here=__file__)
