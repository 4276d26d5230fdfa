"""The rules a notice must satisfy, applied by HQ before sending and by adapters after decoding.

Input may be in our own JSON shape or in the detail shape of INTERPOL's public notices API
(``entity_id`` instead of ``notice_id``, ``_links``/``_embedded`` ignored).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from notice_bus.errors import InvalidNotice
from notice_bus.model import Action, ArrestWarrant, NoticeEvent, Person

# ASCII digits only (``\d`` takes any Unicode digit), and nothing after the match (``$`` lets a
# trailing newline through): these values become keys, columns, paths and URLs.
NOTICE_ID = re.compile(r"^[0-9]{4}/[0-9]{1,10}\Z")
COUNTRY = re.compile(r"^[A-Z]{2}\Z")
CODE = re.compile(r"^[A-Z]{2,4}\Z")
DATE = re.compile(r"^([0-9]{4})(?:/([0-9]{2})(?:/([0-9]{2}))?)?\Z")
SEX = frozenset({"F", "M", "U"})
_TEXT_LIMIT = 4000
_LIST_FIELDS = ("nationalities", "eyes_colors_id", "hairs_id", "languages_spoken_ids", "images")
_IGNORED = frozenset(
    {"_links", "_embedded", "notice_id", "entity_id", "requesting_country", "target_countries"}
)


@dataclass(frozen=True, slots=True)
class Draft:
    """A notice as HQ receives it, validated, before HQ gives it a version."""

    notice_id: str
    requesting_country: str
    target_countries: tuple[str, ...]
    person: Person


def parse_draft(obj: Any) -> Draft:
    """Validate one notice object from JSON; raises :class:`InvalidNotice` naming the field."""
    if not isinstance(obj, Mapping):
        raise InvalidNotice(f"a notice must be a JSON object, got {type(obj).__name__}")
    raw_id = obj.get("notice_id", obj.get("entity_id"))
    if not isinstance(raw_id, str):
        raise InvalidNotice("missing notice id (notice_id or entity_id)", field="notice_id")
    notice_id = raw_id.replace("-", "/")  # INTERPOL's URLs spell 1993/27493 as 1993-27493
    try:
        check_notice_id(notice_id)
        person = _parse_person(obj)
        warrants = person.arrest_warrants
        requesting = obj.get("requesting_country") or warrants[0].issuing_country_id
        _country(requesting, "requesting_country")
        targets = obj.get("target_countries") or []
        if not isinstance(targets, list):
            raise InvalidNotice("must be a list of country codes", field="target_countries")
        for i, code in enumerate(targets):
            _country(code, f"target_countries[{i}]")
    except InvalidNotice as exc:
        raise InvalidNotice(exc.reason, field=exc.field, notice_id=notice_id) from None
    return Draft(notice_id, requesting, tuple(sorted(set(targets))), person)


def validate_event(event: NoticeEvent) -> None:
    """Check a decoded event; raises :class:`InvalidNotice`."""
    try:
        check_notice_id(event.notice_id)
        if event.version < 1:
            raise InvalidNotice(f"must be at least 1, got {event.version}", field="version")
        _country(event.requesting_country, "requesting_country")
        for i, code in enumerate(event.target_countries):
            _country(code, f"target_countries[{i}]")
        if event.action is Action.CANCEL:
            return
        if event.person is None:
            raise InvalidNotice(f"a {event.action} needs the person", field="person")
        validate_person(event.person)
    except InvalidNotice as exc:
        raise InvalidNotice(exc.reason, field=exc.field, notice_id=event.notice_id) from None


def check_notice_id(notice_id: str) -> None:
    if not NOTICE_ID.match(notice_id):
        raise InvalidNotice(f"must look like YYYY/NNNNN, got {notice_id!r}", field="notice_id")


def validate_person(p: Person) -> None:
    if not p.name.strip():
        raise InvalidNotice("must not be empty", field="name")
    for name in ("name", "forename", "place_of_birth", "distinguishing_marks"):
        value = getattr(p, name)
        if value is not None and len(value) > _TEXT_LIMIT:
            raise InvalidNotice(f"longer than {_TEXT_LIMIT} characters", field=name)
    if p.date_of_birth is not None:
        _date(p.date_of_birth)
    if p.sex_id is not None and p.sex_id not in SEX:
        raise InvalidNotice(f"must be one of F, M, U; got {p.sex_id!r}", field="sex_id")
    for i, code in enumerate(p.nationalities):
        _country(code, f"nationalities[{i}]")
    if p.country_of_birth_id is not None:
        _country(p.country_of_birth_id, "country_of_birth_id")
    _range(p.height, 0.3, 2.8, "height", "metres")
    _range(p.weight, 1.0, 500.0, "weight", "kilograms")
    for name in ("eyes_colors_id", "hairs_id", "languages_spoken_ids"):
        for i, code in enumerate(getattr(p, name)):
            if not CODE.match(code):
                raise InvalidNotice(f"not a code like 'BRO': {code!r}", field=f"{name}[{i}]")
    if not p.arrest_warrants:
        raise InvalidNotice("a red notice rests on at least one warrant", field="arrest_warrants")
    for i, w in enumerate(p.arrest_warrants):
        _country(w.issuing_country_id, f"arrest_warrants[{i}].issuing_country_id")
        if not w.charge.strip():
            raise InvalidNotice("must not be empty", field=f"arrest_warrants[{i}].charge")


def _parse_person(obj: Mapping[str, Any]) -> Person:
    values: dict[str, Any] = {}
    fields = set(Person.__dataclass_fields__)
    for key, value in obj.items():
        if key in _IGNORED or value is None:
            continue
        if key not in fields:
            raise InvalidNotice("unknown field", field=key)
        values[key] = value
    if not isinstance(values.get("name"), str):
        raise InvalidNotice("required, a string", field="name")
    for key in (
        "forename",
        "date_of_birth",
        "sex_id",
        "country_of_birth_id",
        "place_of_birth",
        "distinguishing_marks",
    ):
        if key in values and not isinstance(values[key], str):
            raise InvalidNotice("must be a string", field=key)
    for key in ("height", "weight"):
        if key in values:
            if isinstance(values[key], bool) or not isinstance(values[key], int | float):
                raise InvalidNotice("must be a number", field=key)
            values[key] = float(values[key])
    for key in _LIST_FIELDS:
        if key in values:
            values[key] = _strings(values[key], key)
    values["arrest_warrants"] = tuple(_warrants(values.get("arrest_warrants", [])))
    person = Person(**values)
    validate_person(person)
    return person


def _warrants(raw: Any) -> Iterable[ArrestWarrant]:
    if not isinstance(raw, list):
        raise InvalidNotice("must be a list", field="arrest_warrants")
    for i, w in enumerate(raw):
        where = f"arrest_warrants[{i}]"
        if not isinstance(w, Mapping):
            raise InvalidNotice("must be an object", field=where)
        for key in ("issuing_country_id", "charge"):
            if not isinstance(w.get(key), str):
                raise InvalidNotice("required, a string", field=f"{where}.{key}")
        translation = w.get("charge_translation")
        if translation is not None and not isinstance(translation, str):
            raise InvalidNotice("must be a string", field=f"{where}.charge_translation")
        yield ArrestWarrant(w["issuing_country_id"], w["charge"], translation)


def _strings(raw: Any, field: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise InvalidNotice("must be a list of strings", field=field)
    return tuple(raw)


def _country(code: Any, field: str) -> None:
    if not isinstance(code, str) or not COUNTRY.match(code):
        raise InvalidNotice(f"not an ISO 3166-1 alpha-2 code: {code!r}", field=field)


def _date(value: str) -> None:
    m = DATE.match(value)
    if not m:
        raise InvalidNotice(
            f"must be YYYY/MM/DD, YYYY/MM or YYYY; got {value!r}", field="date_of_birth"
        )
    _, month, day = m.groups()
    if (month and not 1 <= int(month) <= 12) or (day and not 1 <= int(day) <= 31):
        raise InvalidNotice(f"no such date: {value!r}", field="date_of_birth")


def _range(value: float | None, low: float, high: float, field: str, unit: str) -> None:
    if value is not None and not low <= value <= high:
        raise InvalidNotice(f"must be {low} to {high} {unit}, got {value}", field=field)
