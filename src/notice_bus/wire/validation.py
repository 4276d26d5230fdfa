"""The rules a notice must satisfy, applied by HQ before sending and by adapters after decoding.

Input may be in our own JSON shape or in the detail shape of INTERPOL's public notices API
(``entity_id`` instead of ``notice_id``, ``_links``/``_embedded`` ignored).

Countries and languages are checked against maintained code lists (pycountry's copies of ISO
3166-1 and ISO 639), not by shape: ``XX`` looks like a country and is none. Target countries
are the exception, checked by shape only: HQ checks them against the countries that have a
topic, which may be made up (benchmarks use hundreds). Dates of birth must be real calendar
dates, possibly partial, from 1900 to today.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pycountry

from notice_bus.errors import InvalidNotice
from notice_bus.wire.model import Action, ArrestWarrant, NoticeEvent, Person

# ASCII digits only (``\d`` takes any Unicode digit), and nothing after the match (``$`` lets a
# trailing newline through): these values become keys, columns, paths and URLs.
NOTICE_ID = re.compile(r"^[0-9]{4}/[0-9]{1,10}\Z")
COUNTRY = re.compile(r"^[A-Z]{2}\Z")
CODE = re.compile(r"^[A-Z]{2,4}\Z")
DATE = re.compile(r"^([0-9]{4})(?:/([0-9]{2})(?:/([0-9]{2}))?)?\Z")
SEX = frozenset({"F", "M", "U"})
#: Codes INTERPOL uses that ISO 3166-1 has not assigned: XK, Kosovo (a user-assigned code).
EXTRA_COUNTRIES = frozenset({"XK"})
EARLIEST_BIRTH_YEAR = 1900
_TEXT_LIMIT = 4000
_LIST_FIELDS = ("nationalities", "eyes_colors_id", "hairs_id", "languages_spoken_ids", "images")
_STRING_FIELDS = (
    "forename",
    "date_of_birth",
    "sex_id",
    "country_of_birth_id",
    "place_of_birth",
    "distinguishing_marks",
)
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


@functools.cache
def country_codes() -> frozenset[str]:
    """ISO 3166-1 alpha-2 codes of today's countries, and :data:`EXTRA_COUNTRIES`."""
    return frozenset(c.alpha_2 for c in pycountry.countries) | EXTRA_COUNTRIES


@functools.cache
def language_codes() -> frozenset[str]:
    """Three-letter ISO 639 codes, upper case as INTERPOL writes them: ISO 639-3 (``FRA``),
    ISO 639-2's bibliographic variants (``FRE``, which INTERPOL uses) and ISO 639-5's
    language families (``BER``); ISO 639-2 is a subset of the three."""
    codes = set()
    for lang in pycountry.languages:
        codes.add(lang.alpha_3.upper())
        bibliographic = getattr(lang, "bibliographic", None)
        if bibliographic:
            codes.add(bibliographic.upper())
    codes.update(f.alpha_3.upper() for f in pycountry.language_families)
    return frozenset(codes)


def parse_draft(obj: Any) -> Draft:
    """Validate one notice object from JSON; raises :class:`InvalidNotice` for its first
    problem, naming the field (:func:`check_draft` gives every problem)."""
    draft, problems = check_draft(obj)
    if problems:
        raise problems[0]
    assert draft is not None
    return draft


def check_draft(obj: Any) -> tuple[Draft | None, list[InvalidNotice]]:
    """One notice object from JSON: the draft and no problems, or None and every problem found,
    each naming the notice (when its id is readable) and the field."""
    if not isinstance(obj, Mapping):
        return None, [InvalidNotice(f"a notice must be a JSON object, got {type(obj).__name__}")]
    raw_id = obj.get("notice_id", obj.get("entity_id"))
    if not isinstance(raw_id, str):
        return None, [
            InvalidNotice("missing notice id (notice_id or entity_id)", field="notice_id")
        ]
    notice_id = raw_id.replace("-", "/")  # INTERPOL's URLs spell 1993/27493 as 1993-27493
    out: list[InvalidNotice] = []
    _notice_id(notice_id, out)
    person = _parse_person(obj, out)
    requesting = obj.get("requesting_country") or None
    if requesting is not None:
        _country(requesting, "requesting_country", out)
    elif person.arrest_warrants:  # checked as the warrant's issuing country
        requesting = person.arrest_warrants[0].issuing_country_id
    targets = obj.get("target_countries") or []
    if not isinstance(targets, list):
        out.append(InvalidNotice("must be a list of country codes", field="target_countries"))
        targets = []
    for i, code in enumerate(targets):
        _country_shape(code, f"target_countries[{i}]", out)
    if out or not isinstance(requesting, str):  # no requesting country: reported as no warrant
        return None, [_about(notice_id, e) for e in out]
    return Draft(notice_id, requesting, tuple(sorted(set(targets))), person), []


def validate_event(event: NoticeEvent) -> None:
    """Check a decoded event; raises :class:`InvalidNotice` for its first problem."""
    out: list[InvalidNotice] = []
    _notice_id(event.notice_id, out)
    if event.version < 1:
        out.append(InvalidNotice(f"must be at least 1, got {event.version}", field="version"))
    _country(event.requesting_country, "requesting_country", out)
    for i, code in enumerate(event.target_countries):
        _country_shape(code, f"target_countries[{i}]", out)
    if event.action is not Action.CANCEL:
        if event.person is None:
            out.append(InvalidNotice(f"a {event.action} needs the person", field="person"))
        else:
            _check_person(event.person, out)
    if out:
        raise _about(event.notice_id, out[0])


def check_notice_id(notice_id: str) -> None:
    """Raises :class:`InvalidNotice` unless ``notice_id`` looks like ``YYYY/NNNNN``."""
    out: list[InvalidNotice] = []
    _notice_id(notice_id, out)
    if out:
        raise out[0]


def validate_person(p: Person) -> None:
    """Raises :class:`InvalidNotice` for the first problem of ``p``. A list field may be None
    (unknown) or empty (none)."""
    out: list[InvalidNotice] = []
    _check_person(p, out)
    if out:
        raise out[0]


def _check_person(p: Person, out: list[InvalidNotice]) -> None:
    if not p.name.strip():
        out.append(InvalidNotice("must not be empty", field="name"))
    for name in ("name", "forename", "place_of_birth", "distinguishing_marks"):
        value = getattr(p, name)
        if value is not None and len(value) > _TEXT_LIMIT:
            out.append(InvalidNotice(f"longer than {_TEXT_LIMIT} characters", field=name))
    if p.date_of_birth is not None:
        reason = _date_problem(p.date_of_birth)
        if reason:
            out.append(InvalidNotice(reason, field="date_of_birth"))
    if p.sex_id is not None and p.sex_id not in SEX:
        out.append(InvalidNotice(f"must be one of F, M, U; got {p.sex_id!r}", field="sex_id"))
    for i, code in enumerate(p.nationalities or ()):
        _country(code, f"nationalities[{i}]", out)
    if p.country_of_birth_id is not None:
        _country(p.country_of_birth_id, "country_of_birth_id", out)
    _range(p.height, 0.3, 2.8, "height", "metres", out)
    _range(p.weight, 1.0, 500.0, "weight", "kilograms", out)
    for name in ("eyes_colors_id", "hairs_id"):
        for i, code in enumerate(getattr(p, name) or ()):
            if not CODE.match(code):
                out.append(InvalidNotice(f"not a code like 'BRO': {code!r}", field=f"{name}[{i}]"))
    if p.languages_spoken_ids:
        languages = language_codes()
        for i, code in enumerate(p.languages_spoken_ids):
            if code not in languages:
                reason = f"not an ISO 639 language code like 'ENG' or 'FRE': {code!r}"
                out.append(InvalidNotice(reason, field=f"languages_spoken_ids[{i}]"))
    if not p.arrest_warrants:
        reason = "a red notice rests on at least one warrant"
        out.append(InvalidNotice(reason, field="arrest_warrants"))
    for i, w in enumerate(p.arrest_warrants):
        _country(w.issuing_country_id, f"arrest_warrants[{i}].issuing_country_id", out)
        if not w.charge.strip():
            out.append(InvalidNotice("must not be empty", field=f"arrest_warrants[{i}].charge"))


def _parse_person(obj: Mapping[str, Any], out: list[InvalidNotice]) -> Person:
    """The person of a notice object; a field of the wrong type is reported to ``out`` and left
    out, so that the rest is still checked (the person is then only good for that)."""
    values: dict[str, Any] = {}
    fields = set(Person.__dataclass_fields__)
    typed: list[InvalidNotice] = []
    for key, value in obj.items():
        if key in _IGNORED:
            continue
        if key not in fields:
            typed.append(InvalidNotice("unknown field", field=key))
        elif value is not None:
            values[key] = value
        elif key in _LIST_FIELDS:
            values[key] = None  # INTERPOL's null list: unknown, unlike [] (none)
    if not isinstance(values.get("name"), str):
        typed.append(InvalidNotice("required, a string", field="name"))
        values["name"] = "?"  # stands in, so the other fields are still checked
    for key in _STRING_FIELDS:
        if key in values and not isinstance(values[key], str):
            typed.append(InvalidNotice("must be a string", field=key))
            del values[key]
    for key in ("height", "weight"):
        if key in values:
            if isinstance(values[key], bool) or not isinstance(values[key], int | float):
                typed.append(InvalidNotice("must be a number", field=key))
                del values[key]
            else:
                values[key] = float(values[key])
    for key in _LIST_FIELDS:
        if values.get(key) is not None:
            raw = values[key]
            if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
                values[key] = tuple(raw)
            else:
                typed.append(InvalidNotice("must be a list of strings", field=key))
                del values[key]
    values["arrest_warrants"] = tuple(_warrants(values.get("arrest_warrants", []), typed))
    person = Person(**values)
    checked: list[InvalidNotice] = []
    _check_person(person, checked)
    # A field refused for its type (or for one of its items) is not refused again for what
    # stood in for it: a list of bad warrants is not also "no warrant".
    refused = [e.field for e in typed if e.field]
    out += typed
    out += [e for e in checked if not any(_within(r, e.field) for r in refused)]
    return person


def _within(field: str, outer: str | None) -> bool:
    """Whether ``field`` is ``outer`` or a part of it (``outer[0].charge``)."""
    return outer is not None and (field == outer or field.startswith((f"{outer}[", f"{outer}.")))


def _warrants(raw: Any, out: list[InvalidNotice]) -> Iterable[ArrestWarrant]:
    if not isinstance(raw, list):
        out.append(InvalidNotice("must be a list", field="arrest_warrants"))
        return
    for i, w in enumerate(raw):
        where = f"arrest_warrants[{i}]"
        if not isinstance(w, Mapping):
            out.append(InvalidNotice("must be an object", field=where))
            continue
        good = True
        for key in ("issuing_country_id", "charge"):
            if not isinstance(w.get(key), str):
                out.append(InvalidNotice("required, a string", field=f"{where}.{key}"))
                good = False
        translation = w.get("charge_translation")
        if translation is not None and not isinstance(translation, str):
            out.append(InvalidNotice("must be a string", field=f"{where}.charge_translation"))
            good = False
        if good:
            yield ArrestWarrant(w["issuing_country_id"], w["charge"], translation)


def _about(notice_id: str, exc: InvalidNotice) -> InvalidNotice:
    return InvalidNotice(exc.reason, field=exc.field, notice_id=notice_id, source=exc.source)


def _notice_id(notice_id: str, out: list[InvalidNotice]) -> None:
    if not NOTICE_ID.match(notice_id):
        reason = f"must look like YYYY/NNNNN, got {notice_id!r}"
        out.append(InvalidNotice(reason, field="notice_id"))


def _country(code: Any, field: str, out: list[InvalidNotice]) -> None:
    if not isinstance(code, str) or code not in country_codes():
        out.append(InvalidNotice(f"not an ISO 3166-1 alpha-2 country code: {code!r}", field=field))


def _country_shape(code: Any, field: str, out: list[InvalidNotice]) -> None:
    if not isinstance(code, str) or not COUNTRY.match(code):
        out.append(InvalidNotice(f"not a two-letter country code: {code!r}", field=field))


def _date_problem(value: str) -> str | None:
    """Why ``value`` is no date of birth (YYYY/MM/DD, YYYY/MM or YYYY), or None."""
    m = DATE.match(value)
    if not m:
        return f"must be YYYY/MM/DD, YYYY/MM or YYYY; got {value!r}"
    year, month, day = m.groups()
    try:
        date(int(year), int(month or 1), int(day or 1))
    except ValueError:
        return f"no such date: {value!r}"
    if int(year) < EARLIEST_BIRTH_YEAR:
        return f"must not be before {EARLIEST_BIRTH_YEAR}, got {value!r}"
    # Fixed-width fields: as strings, "2026" and "2026/12" sort before "2026/12/05" and
    # "2027" after it, which is the order of the dates (a partial one at its start).
    if value > _latest_date(int(time.time()) // 60):
        return f"must not be in the future, got {value!r}"
    return None


@functools.lru_cache(maxsize=1)
def _latest_date(minute: int) -> str:
    """Today where it is latest on Earth (UTC+14) at the end of ``minute`` (since the epoch),
    so that no clock refuses a birth that has happened; per minute, as adapters check every
    record and the current time costs more than the rest of the check."""
    at = datetime.fromtimestamp((minute + 1) * 60, UTC) + timedelta(hours=14)
    return at.strftime("%Y/%m/%d")


def _range(
    value: float | None, low: float, high: float, field: str, unit: str, out: list[InvalidNotice]
) -> None:
    if value is not None and not low <= value <= high:
        out.append(InvalidNotice(f"must be {low} to {high} {unit}, got {value}", field=field))
