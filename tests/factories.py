"""Small builders of valid notices for tests, and a look at a country's table."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from notice_bus.bureau.sinks.tables import RED_NOTICE
from notice_bus.wire.model import Action, ArrestWarrant, NoticeEvent, Person
from notice_bus.wire.validation import Draft

#: Three instants in milliseconds, in order, for the keyring and signing tests.
T0 = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp() * 1000)
T1 = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp() * 1000)
T2 = int(datetime(2026, 12, 5, 10, tzinfo=UTC).timestamp() * 1000)

PERSON = Person(
    name="Иванов",
    forename="Алексей",
    date_of_birth="1980/04",
    sex_id="M",
    nationalities=("RU",),
    arrest_warrants=(ArrestWarrant("RU", "Мошенничество", "Fraud"),),
)


def notice_json(notice_id: str = "2026/100", **fields: Any) -> dict[str, Any]:
    """A notice as HQ's input JSON."""
    body: dict[str, Any] = {
        "notice_id": notice_id,
        "name": "Dubois",
        "forename": "Camille",
        "date_of_birth": "1985/07/14",
        "sex_id": "F",
        "nationalities": ["FR"],
        "arrest_warrants": [{"issuing_country_id": "FR", "charge": "Armed robbery"}],
    }
    body.update(fields)
    return body


def draft(notice_id: str = "2026/100", targets: tuple[str, ...] = (), **person: Any) -> Draft:
    from dataclasses import replace

    return Draft(notice_id, "RU", targets, replace(PERSON, **person))


def event(
    notice_id: str = "2026/100", version: int = 1, action: Action = Action.PUBLISH, **kw: Any
) -> NoticeEvent:
    values: dict[str, Any] = {
        "notice_id": notice_id,
        "version": version,
        "action": action,
        "requesting_country": "RU",
        "published_at": datetime(2026, 11, 23, 8, 0, tzinfo=UTC),
        "person": None if action is Action.CANCEL else PERSON,
    }
    values.update(kw)
    return NoticeEvent(**values)


def local_rows(url: str) -> dict[str, Any]:
    """A country's ``red_notice`` rows in the database at ``url``, by notice id."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {r.notice_id: r for r in conn.execute(sa.select(RED_NOTICE))}
    finally:
        engine.dispose()
