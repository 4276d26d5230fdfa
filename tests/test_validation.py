"""HQ's input rules: good notices pass, and each bad one names the file, notice and field."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from notice_bus.errors import InvalidNotice
from notice_bus.hq.publisher import read_drafts
from notice_bus.wire.validation import parse_draft, validate_event
from tests.factories import PERSON, event, notice_json

# The detail shape of INTERPOL's public notices API, trimmed.
INTERPOL_DETAIL = {
    "entity_id": "1993-27493",
    "forename": "JOHN",
    "name": "DOE",
    "date_of_birth": "1966/06/05",
    "sex_id": "M",
    "nationalities": ["US"],
    "country_of_birth_id": "US",
    "place_of_birth": "NEW YORK",
    "distinguishing_marks": "Tattoo on the right forearm",
    "height": 1.8,
    "weight": 82,
    "eyes_colors_id": ["BRO"],
    "hairs_id": ["BLA"],
    "languages_spoken_ids": ["ENG"],
    "arrest_warrants": [
        {"issuing_country_id": "US", "charge": "Murder", "charge_translation": None}
    ],
    "_links": {"self": {"href": "https://example.invalid/notices/v1/red/1993-27493"}},
    "_embedded": {"links": []},
}


def test_our_shape_is_accepted() -> None:
    d = parse_draft(notice_json(target_countries=["TH", "ID", "TH"]))
    assert d.notice_id == "2026/100"
    assert d.target_countries == ("ID", "TH")
    assert d.requesting_country == "FR"  # from the first warrant when not given


def test_interpol_api_detail_shape_is_accepted() -> None:
    d = parse_draft(INTERPOL_DETAIL)
    assert d.notice_id == "1993/27493"
    assert d.person.weight == 82.0
    assert d.person.arrest_warrants[0].charge == "Murder"
    assert d.target_countries == ()


def test_names_in_any_script_and_partial_dates() -> None:
    for name, dob in [("王", "1970"), ("สมชาย", "1982/03"), ("الحسن", "1990/12/31")]:
        assert parse_draft(notice_json(name=name, date_of_birth=dob)).person.name == name


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"notice_id": "12345"}, "notice_id"),
        ({"name": ""}, "name"),
        ({"name": None}, "name"),
        ({"date_of_birth": "14/07/1985"}, "date_of_birth"),
        ({"date_of_birth": "1985/13/01"}, "date_of_birth"),
        ({"sex_id": "X"}, "sex_id"),
        ({"nationalities": ["France"]}, "nationalities[0]"),
        ({"height": 7.5}, "height"),
        ({"weight": "heavy"}, "weight"),
        ({"eyes_colors_id": ["brown eyes"]}, "eyes_colors_id[0]"),
        ({"arrest_warrants": []}, "arrest_warrants"),
        ({"arrest_warrants": [{"issuing_country_id": "FR"}]}, "arrest_warrants[0].charge"),
        ({"target_countries": ["XXX"]}, "target_countries[0]"),
        ({"shoe_size": 44}, "shoe_size"),
    ],
)
def test_each_bad_field_is_named(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidNotice) as info:
        parse_draft(notice_json(**change))
    assert info.value.field == field
    assert f"field {field!r}" in str(info.value)


def test_file_errors_name_file_index_notice_and_field(tmp_path: Path) -> None:
    path = tmp_path / "batch.json"
    path.write_text(json.dumps([notice_json("2026/1"), notice_json("2026/2", sex_id="Q")]))
    with pytest.raises(InvalidNotice) as info:
        read_drafts(path)
    message = str(info.value)
    assert f"{path}[1]" in message
    assert "notice 2026/2" in message
    assert "'sex_id'" in message


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidNotice, match="cannot read"):
        read_drafts(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InvalidNotice, match="not valid JSON"):
        read_drafts(bad)


def test_the_same_notice_twice_in_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.json"
    path.write_text(json.dumps([notice_json("2026/7"), notice_json("2026/7")]))
    with pytest.raises(InvalidNotice, match="appears twice"):
        read_drafts(path)


def test_decoded_event_checks() -> None:
    validate_event(event())
    with pytest.raises(InvalidNotice, match="version"):
        validate_event(event(version=0))
    with pytest.raises(InvalidNotice, match="person"):
        validate_event(event(person=None))


def _days_from_today(days: int) -> str:
    return (datetime.now(UTC).date() + timedelta(days=days)).strftime("%Y/%m/%d")


@pytest.mark.parametrize(
    ("dob", "reason"),
    [
        ("1982/02/29", "no such date"),  # 1982 is no leap year
        ("2001/02/31", "no such date"),
        ("2023/04/31", "no such date"),
        ("1900/02/29", "no such date"),  # a century, not a leap year
        ("2999", "in the future"),
        ("2999/01", "in the future"),
        (f"{datetime.now(UTC).year + 1}", "in the future"),
        ("1899/12/31", "before 1900"),
        ("1066", "before 1900"),
    ],
)
def test_impossible_future_and_too_old_dates_of_birth_are_refused(dob: str, reason: str) -> None:
    with pytest.raises(InvalidNotice, match=reason) as info:
        parse_draft(notice_json(date_of_birth=dob))
    assert info.value.field == "date_of_birth" and repr(dob) in str(info.value)
    with pytest.raises(InvalidNotice, match=reason):  # adapters apply the same rule
        validate_event(event(person=replace(PERSON, date_of_birth=dob)))


def test_a_date_two_days_ahead_is_refused_and_real_dates_up_to_today_pass() -> None:
    with pytest.raises(InvalidNotice, match="in the future"):
        parse_draft(notice_json(date_of_birth=_days_from_today(2)))
    this_month = datetime.now(UTC).strftime("%Y/%m")
    for dob in ("1980/02/29", "2000/02/29", "1900", "1900/01/01", this_month, _days_from_today(-1)):
        assert parse_draft(notice_json(date_of_birth=dob)).person.date_of_birth == dob


def test_explicit_null_lists_stay_unknown_and_empty_lists_stay_none() -> None:
    lists = ("nationalities", "eyes_colors_id", "hairs_id", "languages_spoken_ids", "images")
    unknown = parse_draft(notice_json(**dict.fromkeys(lists))).person
    assert all(getattr(unknown, name) is None for name in lists)
    empty = parse_draft(notice_json(**{name: [] for name in lists})).person
    assert all(getattr(empty, name) == () for name in lists)
    detail = parse_draft({**INTERPOL_DETAIL, "eyes_colors_id": None, "hairs_id": None})
    assert (detail.person.eyes_colors_id, detail.person.hairs_id) == (None, None)
    validate_event(event(person=replace(PERSON, **dict.fromkeys(lists))))


def test_every_bad_notice_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "batch.json"
    notices = [
        notice_json("2026/1", sex_id="Q"),
        notice_json("2026/2"),
        notice_json("2026/3", nationalities=["XX"]),
        notice_json("2026/4", languages_spoken_ids=["QQQ"]),
    ]
    path.write_text(json.dumps(notices))
    with pytest.raises(InvalidNotice) as info:
        read_drafts(path)
    lines = str(info.value).splitlines()
    assert lines == [
        f"{path}[0]: notice 2026/1: field 'sex_id': must be one of F, M, U; got 'Q'",
        f"{path}[2]: notice 2026/3: field 'nationalities[0]':"
        " not an ISO 3166-1 alpha-2 country code: 'XX'",
        f"{path}[3]: notice 2026/4: field 'languages_spoken_ids[0]':"
        " not an ISO 639 language code like 'ENG' or 'FRE': 'QQQ'",
    ]
    # The first problem's fields, for code that reads them.
    first = info.value
    assert (first.source, first.notice_id, first.field) == (f"{path}[0]", "2026/1", "sex_id")


def test_every_bad_field_of_a_notice_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "one.json"
    path.write_text(
        json.dumps(
            notice_json(
                "2026/9",
                name=7,
                sex_id="Q",
                height="tall",
                nationalities=["FR", "ZZ"],
                arrest_warrants=[{"issuing_country_id": "FR"}],
                shoe_size=44,
            )
        )
    )
    with pytest.raises(InvalidNotice) as info:
        read_drafts(path)
    fields = [line.split("field ")[1].split(":")[0] for line in str(info.value).splitlines()]
    assert sorted(fields) == sorted(
        [
            "'name'",
            "'sex_id'",
            "'height'",
            "'nationalities[1]'",
            "'arrest_warrants[0].charge'",
            "'shoe_size'",
        ]
    )
    assert all(line.startswith(f"{path}: notice 2026/9: ") for line in str(info.value).splitlines())
