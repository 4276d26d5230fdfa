"""A country's copy in its own database (the SQL sink's tables): ``red_notice``, and the
bureau's ``notice_response`` and ``notice_reminder``. Storage types; the wire types are in
:mod:`notice_bus.wire.model`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from notice_bus.runtime.columns import json_list, json_list_or_null, table_of, ts_column
from notice_bus.runtime.migrations import register


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
    nationalities: list[str] | None = json_list_or_null()
    country_of_birth_id: str | None = Field(default=None, max_length=2)
    place_of_birth: str | None = None
    distinguishing_marks: str | None = None
    height: float | None = None
    weight: float | None = None
    eyes_colors_id: list[str] | None = json_list_or_null()
    hairs_id: list[str] | None = json_list_or_null()
    languages_spoken_ids: list[str] | None = json_list_or_null()
    arrest_warrants: list[dict[str, Any]] = json_list()
    images: list[str] | None = json_list_or_null()
    withdrawn_reason: str | None = None
    event_id: str = Field(max_length=36)
    published_at: datetime = ts_column(nullable=False)
    recorded_at: datetime = ts_column(nullable=False)


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
    answered_at: datetime = ts_column(nullable=False)
    sent_at: datetime | None = ts_column(nullable=True)


class LocalReminder(SQLModel, table=True):
    """HQ's reminders of overdue notices, surfaced in the local system for its officers."""

    __tablename__ = "notice_reminder"

    id: int | None = Field(default=None, primary_key=True)
    notice_id: str = Field(max_length=16, index=True)
    version: int
    kind: str = Field(max_length=12)
    deadline: datetime = ts_column(nullable=False)
    reminded_at: datetime = ts_column(nullable=False)
    text: str


RED_NOTICE = table_of(RedNotice)
LOCAL_RESPONSE = table_of(LocalResponse)
LOCAL_REMINDER = table_of(LocalReminder)
LOCAL_TABLES = [RED_NOTICE, LOCAL_RESPONSE, LOCAL_REMINDER]

register("local", LOCAL_TABLES, head="local_0002", baseline="local_0001", here=__file__)
