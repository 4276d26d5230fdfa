"""How a notice event becomes a ``red_notice`` row: as a dict for an upsert, or as the values
of one COPY line.

A bulk load (a country's bootstrap: 58,000 notices) spends most of its Python time here, so
:func:`copy_values` goes straight from the event to the COPY line, without the dict and
without ``json.dumps`` per column; :func:`row_of` then :func:`values_of` is the reference it
must equal (tests/test_sql_rows.py compares them).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import datetime
from operator import attrgetter
from typing import Any

from sqlalchemy import JSON

from notice_bus.bureau.sinks.tables import RED_NOTICE
from notice_bus.wire.model import ACTIVE, WITHDRAWN, Action, NoticeEvent, Person

COLUMNS = [c.name for c in RED_NOTICE.c]
JSON_COLUMNS = {c.name for c in RED_NOTICE.c if isinstance(c.type, JSON)}
_PERSON = tuple(f.name for f in dataclasses.fields(Person))
_person_values = attrgetter(*_PERSON)
# Where each person field goes in a COPY line, and which of them are JSON lists of strings.
_SLOTS = [
    (COLUMNS.index(name), name in JSON_COLUMNS and name != "arrest_warrants") for name in _PERSON
]
_WARRANTS_AT = COLUMNS.index("arrest_warrants")
_AT = {name: COLUMNS.index(name) for name in COLUMNS}
_CANCELLED: list[Any] = [None] * len(COLUMNS)  # the person's columns of a cancel HQ never sent here
for _name in JSON_COLUMNS:
    _CANCELLED[_AT[_name]] = "[]"


def row_of(event: NoticeEvent, now: datetime) -> dict[str, Any]:
    """The row an upsert writes: every column, JSON columns as Python lists (an unknown
    list None; a cancel's lists empty)."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    for name in JSON_COLUMNS:
        row[name] = []
    if event.person is not None:
        row.update(event.person.to_avro())
    row.update(
        notice_id=event.notice_id,
        version=event.version,
        status=WITHDRAWN if event.action is Action.CANCEL else ACTIVE,
        requesting_country=event.requesting_country,
        withdrawn_reason=event.reason if event.action is Action.CANCEL else None,
        event_id=event.event_id,
        published_at=event.published_at,
        recorded_at=now,
    )
    return row


def values_of(row: dict[str, Any]) -> list[Any]:
    """A row as COPY takes it: values in column order, JSON columns as JSON text; an unknown
    list (None) as SQL NULL, as the upsert stores it."""
    return [
        json.dumps(row[n]) if n in JSON_COLUMNS and row[n] is not None else row[n] for n in COLUMNS
    ]


def copy_values(event: NoticeEvent, now: datetime) -> list[Any]:
    """``values_of(row_of(event, now))``, built directly: the same values, the same JSON
    text."""
    cancel = event.action is Action.CANCEL
    person = event.person
    out = list(_CANCELLED) if person is None else [None] * len(COLUMNS)
    if person is not None:
        values = _person_values(person)
        for (at, is_list), value in zip(_SLOTS, values, strict=True):
            out[at] = _strings(value) if is_list else value
        out[_WARRANTS_AT] = _warrants(person)
    out[_AT["notice_id"]] = event.notice_id
    out[_AT["version"]] = event.version
    out[_AT["status"]] = WITHDRAWN if cancel else ACTIVE
    out[_AT["requesting_country"]] = event.requesting_country
    out[_AT["withdrawn_reason"]] = event.reason if cancel else None
    out[_AT["event_id"]] = event.event_id
    out[_AT["published_at"]] = event.published_at
    out[_AT["recorded_at"]] = now
    return out


def json_string_encoder() -> Callable[[str], str]:
    """The function that makes ``json.dumps(text)`` of a str, without the encoder object
    ``json.dumps`` builds on every call (most of its cost for short strings): the stdlib's C
    function behind it. Not in the json module's documented API, so reached for here only,
    with a test (tests/test_sql_rows.py) that fails if it stops matching ``json.dumps``."""
    return json.encoder.encode_basestring_ascii


_string = json_string_encoder()


def _strings(values: tuple[str, ...] | None) -> str | None:
    """A list of strings as ``json.dumps`` writes it; None (unknown) stays None."""
    if values is None:
        return None
    return "[" + ", ".join(map(_string, values)) + "]"


def _warrants(person: Person) -> str:
    return (
        "["
        + ", ".join(
            f'{{"issuing_country_id": {_string(w.issuing_country_id)}, "charge":'
            f' {_string(w.charge)}, "charge_translation": '
            + ("null" if w.charge_translation is None else _string(w.charge_translation))
            + "}"
            for w in person.arrest_warrants
        )
        + "]"
    )
