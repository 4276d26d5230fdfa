"""Column kinds our SQLModel tables share. Times are stored as UTC."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Column, DateTime, Table
from sqlmodel import Field, SQLModel


def ts_column(**kw: Any) -> Any:
    return Field(sa_column=Column(DateTime(timezone=True), **kw))


def json_list() -> Any:
    return Field(default_factory=list, sa_column=Column(JSON, nullable=False))


def json_list_or_null() -> Any:
    """A list that may be unknown: SQL NULL, not JSON null, so ``IS NULL`` finds it alike on
    PostgreSQL and SQLite (and ``[]`` stays a known empty list)."""
    return Field(default=None, sa_column=Column(JSON(none_as_null=True), nullable=True))


def table_of(model: type[SQLModel]) -> Table:
    table: Table = model.__table__  # type: ignore[attr-defined]
    return table
