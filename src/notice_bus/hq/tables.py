"""HQ's records: the current version of every notice, the outbox, and every version sent.
Storage types; the wire types are in :mod:`notice_bus.wire.model`."""

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


HQ_NOTICE = table_of(HQNotice)
OUTBOX = table_of(OutboxRecord)
HQ_VERSION = table_of(HQVersion)
HQ_TABLES = [HQ_NOTICE, OUTBOX, HQ_VERSION]

register("hq", HQ_TABLES, head="hq_0001", baseline="hq_0001", here=__file__)
