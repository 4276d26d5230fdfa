"""Country and language codes come from maintained lists (ISO 3166-1, ISO 639), not a shape."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from notice_bus.errors import InvalidNotice
from notice_bus.wire.model import ArrestWarrant
from notice_bus.wire.validation import parse_draft, validate_event
from tests.factories import PERSON, event, notice_json

WARRANT = {"issuing_country_id": "FR", "charge": "Armed robbery"}


@pytest.mark.parametrize("code", ["XX", "ZZ"])
@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda c: {"nationalities": ["FR", c]}, "nationalities[1]"),
        (lambda c: {"country_of_birth_id": c}, "country_of_birth_id"),
        (lambda c: {"requesting_country": c}, "requesting_country"),
        (
            lambda c: {"arrest_warrants": [WARRANT, {**WARRANT, "issuing_country_id": c}]},
            "arrest_warrants[1].issuing_country_id",
        ),
    ],
)
def test_country_codes_that_name_no_country_are_refused(code: str, change: Any, field: str) -> None:
    with pytest.raises(InvalidNotice, match="ISO 3166-1") as info:
        parse_draft(notice_json(**change(code)))
    assert info.value.field == field
    assert repr(code) in str(info.value)


def test_adapters_refuse_the_same_codes_in_decoded_events() -> None:
    for bad in (
        event(person=replace(PERSON, nationalities=("XX",))),
        event(requesting_country="ZZ"),
        event(person=replace(PERSON, arrest_warrants=(ArrestWarrant("XX", "Fraud"),))),
        event(person=replace(PERSON, languages_spoken_ids=("QQQ",))),
    ):
        with pytest.raises(InvalidNotice, match="ISO"):
            validate_event(bad)


def test_kosovo_as_interpol_writes_it_is_accepted_where_other_user_codes_are_not() -> None:
    d = parse_draft(
        notice_json(
            nationalities=["XK", "RS"],
            country_of_birth_id="XK",
            requesting_country="XK",
            arrest_warrants=[{"issuing_country_id": "XK", "charge": "Murder"}],
        )
    )
    assert d.person.nationalities == ("XK", "RS") and d.requesting_country == "XK"
    validate_event(event(requesting_country="XK", person=d.person))
    # XK is a user-assigned code like XA..XZ; only INTERPOL's use of it makes it a country.
    # YU (Yugoslavia) was withdrawn from ISO 3166-1 in 2003.
    for code in ("XA", "XZ", "YU"):
        with pytest.raises(InvalidNotice, match="ISO 3166-1"):
            parse_draft(notice_json(nationalities=[code]))


def test_target_countries_stay_checked_by_shape_only() -> None:
    # HQ checks targets against the registered topics; benchmarks make up country codes.
    assert parse_draft(notice_json(target_countries=["ZZ", "QA"])).target_countries == ("QA", "ZZ")
    validate_event(event(target_countries=("ZZ",)))
    with pytest.raises(InvalidNotice) as info:
        parse_draft(notice_json(nationalities=["ZZ"], target_countries=["ZZ"]))
    assert info.value.field == "nationalities[0]"


@pytest.mark.parametrize("code", ["QQQ", "XYZ", "EN", "ENGL"])
def test_unknown_language_codes_are_refused(code: str) -> None:
    with pytest.raises(InvalidNotice, match="ISO 639") as info:
        parse_draft(notice_json(languages_spoken_ids=["ENG", code]))
    assert info.value.field == "languages_spoken_ids[1]"


def test_three_letter_iso_639_codes_in_interpol_upper_case_are_accepted() -> None:
    # ISO 639-2/B (FRE, GER, CHI: INTERPOL's), ISO 639-3 (FRA, DEU, ZHO), a family (BER).
    codes = ["ENG", "FRE", "FRA", "GER", "DEU", "CHI", "ZHO", "ARA", "IND", "BER"]
    d = parse_draft(notice_json(languages_spoken_ids=codes))
    assert d.person.languages_spoken_ids == tuple(codes)
    with pytest.raises(InvalidNotice, match="ISO 639"):
        parse_draft(notice_json(languages_spoken_ids=["XYZ"]))
