"""The SQL sink's COPY lines, built straight from events, equal the reference path (the row
dict, then ``json.dumps`` per JSON column) value for value and character for character."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from notice_bus.bureau.sinks.rows import copy_values, json_string_encoder, row_of, values_of
from notice_bus.hq.generate import make_drafts
from notice_bus.wire.model import NOT_ADDRESSED, Action, ArrestWarrant, NoticeEvent
from tests.factories import PERSON, event

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
AWKWARD = ['quote " and \\ backslash', "tab\tnew\nline", "é ß Ж 中 🚨", "\x00\x1f control", ""]


def events() -> list[NoticeEvent]:
    generated = [
        NoticeEvent(
            notice_id=d.notice_id,
            version=1,
            action=Action.PUBLISH,
            requesting_country=d.requesting_country,
            published_at=NOW,
            target_countries=d.target_countries,
            person=d.person,
        )
        for d in make_drafts(300, first_number=100000)
    ]
    unknown = replace(PERSON, nationalities=None, eyes_colors_id=None, images=None)
    empty = replace(PERSON, nationalities=(), hairs_id=(), languages_spoken_ids=())
    awkward = replace(
        PERSON,
        name=AWKWARD[0],
        place_of_birth=AWKWARD[1],
        images=tuple(AWKWARD),
        arrest_warrants=(
            ArrestWarrant("RU", AWKWARD[2], None),
            ArrestWarrant("FR", AWKWARD[3], AWKWARD[0]),
        ),
    )
    return [
        *generated,
        event("2026/1", person=unknown),
        event("2026/2", person=empty),
        event("2026/3", 2, Action.UPDATE, person=awkward),
        event("2026/4", 3, Action.CANCEL, reason="arrested"),
        event("2026/5", 2, Action.CANCEL, reason=NOT_ADDRESSED),
    ]


def test_copy_values_equal_the_row_then_json_dumps() -> None:
    for e in events():
        assert copy_values(e, NOW) == values_of(row_of(e, NOW)), e.notice_id


@pytest.mark.parametrize("text", [*AWKWARD, "plain", "2026/100"])
def test_the_string_encoder_writes_what_json_dumps_writes(text: str) -> None:
    """It is the stdlib's undocumented C helper: this fails if it stops matching."""
    encode = json_string_encoder()
    assert encode(text) == json.dumps(text)
    assert json.loads(encode(text)) == text
