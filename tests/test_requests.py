"""From request to publication on the real broker: a bureau asks on its own requests topic,
HQ's review service screens the request against Article 3, a reviewer decides, and the
requesting bureau hears the decision on its own decisions topic; every step in HQ's hash
chained audit trail.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from notice_bus.bureau.requests import read_decisions, read_requests, send_requests
from notice_bus.cli import main
from notice_bus.errors import AlreadyDecided, UnknownRequest
from notice_bus.hq import audit
from notice_bus.hq.intake import REQUESTER_MISMATCH, Intake
from notice_bus.runtime.settings import Settings
from notice_bus.wire.request import Decision, NoticeRequest, RequestStatus
from tests.conftest import Bus
from tests.factories import notice_json

pytestmark = pytest.mark.kafka
TARGETS = ["DE", "IT", "ES"]
#: Political charges, one per language: each must hold its request for a reviewer.
POLITICAL = {
    "en": "Insulting the head of state",
    "fr": "Offense au chef de l'État",
    "es": "Injurias al jefe del Estado",
    "ru": "Оскорбление президента",
    "ar": "إهانة رئيس الدولة",
}


class Desk:
    """One test's deployment with HQ's review service beside the adapters."""

    def __init__(self, bus: Bus, tmp_path: Path) -> None:
        self.bus = bus
        self.settings = bus.settings
        self.urls = {cc: f"sqlite:///{tmp_path}/{cc}.db" for cc in TARGETS}
        for cc, url in self.urls.items():
            bus.adapter(cc, url)
        self.intake = Intake(self.settings, hq=bus.hq)

    def ask(self, country: str, *requests: NoticeRequest) -> list[Decision]:
        """Send ``requests`` as ``country``'s bureau; step the review service until each
        has a decision stored, and return the decisions made."""
        send_requests(self.settings, country, list(requests))
        made: list[Decision] = []
        deadline = time.monotonic() + 30
        while len(made) < len(requests):
            assert time.monotonic() < deadline, f"decisions so far: {made}"
            made += self.intake.step()
        return made

    def copies(self, notice_id: str) -> dict[str, bool]:
        """Whether each target country's database holds ``notice_id``."""
        found = {}
        for cc, url in self.urls.items():
            engine = sa.create_engine(url)
            try:
                with engine.connect() as conn:
                    found[cc] = bool(
                        conn.execute(
                            sa.text("SELECT 1 FROM red_notice WHERE notice_id = :n"),
                            {"n": notice_id},
                        ).first()
                    )
            except sa.exc.OperationalError:  # no table yet: nothing written
                found[cc] = False
            finally:
                engine.dispose()
        return found


@pytest.fixture
def desk(make_bus: Callable[..., Bus], tmp_path: Path) -> Iterator[Desk]:
    bus = make_bus(["FR", *TARGETS])
    d = Desk(bus, tmp_path)
    yield d
    d.intake.close()


def request(notice_id: str, charge: str = "Armed robbery", **extra: Any) -> NoticeRequest:
    notice = notice_json(
        notice_id,
        target_countries=TARGETS,
        arrest_warrants=[{"issuing_country_id": "FR", "charge": charge}],
    )
    notice.update(extra.pop("notice", {}))
    return NoticeRequest(notice=json.dumps(notice, ensure_ascii=False), **extra)


def test_a_clean_request_appears_in_every_target_and_the_bureau_hears_approved(
    desk: Desk,
) -> None:
    (made,) = desk.ask("FR", request("2026/501"))
    assert made.status is RequestStatus.APPROVED and made.decided_by.startswith("policy:")
    desk.bus.pump(lambda: all(desk.copies("2026/501").values()))
    (heard,) = read_decisions(desk.settings, "FR", wait_for={made.request_id})
    assert heard.status is RequestStatus.APPROVED and heard.notice_id == "2026/501"
    assert read_decisions(desk.settings, "DE") == []  # only the requester is told


@pytest.mark.parametrize("language", sorted(POLITICAL))
def test_a_political_charge_reaches_no_country_and_waits_with_its_rule_and_text(
    desk: Desk, language: str
) -> None:
    charge = POLITICAL[language]
    (held,) = desk.ask("FR", request("2026/502", charge))
    assert held.status is RequestStatus.HELD
    (finding,) = [f for f in held.findings if f["category"] == "political"]
    assert finding["rule_id"].startswith("A3-") and finding["field"].endswith("charge")
    assert finding["text"] and finding["text"] in charge
    assert [r.request_id for r in desk.intake.review.waiting()] == [held.request_id]
    desk.bus.pump(lambda: True)
    time.sleep(1.0)  # what HQ would have sent has had time to arrive
    desk.bus.pump(lambda: True)
    assert desk.copies("2026/502") == dict.fromkeys(TARGETS, False)


def test_refusing_sends_the_decision_to_the_requester_only_and_nothing_anywhere(
    desk: Desk,
) -> None:
    (held,) = desk.ask("FR", request("2026/503", "Sedition"))
    review = desk.intake.review
    refused = review.refuse(held.request_id, "reviewer-1", "Article 3: a political offence")
    assert refused.status is RequestStatus.REFUSED
    heard = read_decisions(desk.settings, "FR", wait_for={held.request_id})
    assert [d.status for d in heard] == [RequestStatus.HELD, RequestStatus.REFUSED]
    assert heard[-1].reason == "Article 3: a political offence"
    assert heard[-1].decided_by == "reviewer-1" and heard[-1].findings
    for cc in TARGETS:
        assert read_decisions(desk.settings, cc, timeout_s=1) == []
    desk.bus.pump(lambda: True)
    assert desk.copies("2026/503") == dict.fromkeys(TARGETS, False)
    with pytest.raises(AlreadyDecided):
        review.approve(held.request_id, "reviewer-2")


def test_an_approved_held_request_is_published_as_publish_does(desk: Desk) -> None:
    (held,) = desk.ask("FR", request("2026/504", "Desertion"))
    approved = desk.intake.review.approve(held.request_id, "reviewer-1", "not military: fraud")
    assert approved.status is RequestStatus.APPROVED
    desk.bus.pump(lambda: all(desk.copies("2026/504").values()))
    with pytest.raises(AlreadyDecided):
        desk.intake.review.refuse(held.request_id, "reviewer-2", "too late")
    with pytest.raises(UnknownRequest):
        desk.intake.review.approve("no-such-request", "reviewer-1")


def test_a_forged_requester_is_recorded_as_the_topics_country(desk: Desk) -> None:
    forged = request("2026/505", notice={"requesting_country": "DE"})
    (held,) = desk.ask("FR", forged)
    assert held.requesting_country == "FR"
    assert held.status is RequestStatus.HELD  # a claim of another requester needs a human
    assert REQUESTER_MISMATCH in {f["rule_id"] for f in held.findings}
    row = desk.intake.review.get(held.request_id)
    assert (row.country, row.claimed_country) == ("FR", "DE")
    desk.intake.review.approve(held.request_id, "reviewer-1", "DE's warrant, FR's request")
    desk.bus.pump(lambda: all(desk.copies("2026/505").values()))
    hq = sa.create_engine(desk.settings.hq_database_url)
    with hq.connect() as conn:
        requester = conn.execute(
            sa.text("SELECT requesting_country FROM hq_notice WHERE notice_id = '2026/505'")
        ).scalar()
    hq.dispose()
    assert requester == "FR"
    assert read_decisions(desk.settings, "DE", timeout_s=1) == []


def test_an_invalid_request_is_told_what_is_wrong(desk: Desk) -> None:
    bad = NoticeRequest(notice=json.dumps({"notice_id": "2026/506", "name": ""}))
    (made,) = desk.ask("FR", bad)
    assert made.status is RequestStatus.INVALID
    assert made.reason and "arrest_warrants" in made.reason


def test_the_audit_chain_tells_the_story_and_fails_once_a_row_is_edited(desk: Desk) -> None:
    (clean,) = desk.ask("FR", request("2026/507"))
    (held,) = desk.ask("FR", request("2026/508", "Blasphemy"))
    desk.intake.review.refuse(held.request_id, "reviewer-1", "religious")
    engine = desk.bus.hq.engine
    check = audit.verify(engine)
    assert check.ok and check.entries >= 6, check
    kinds = [e.kind for e in audit.story(engine, "2026/507")]
    assert kinds == ["REQUEST", "DECISION", "PUBLICATION"]
    kinds = [e.kind for e in audit.story(engine, "2026/508")]
    assert kinds == ["REQUEST", "FINDING", "DECISION"]
    with engine.begin() as conn:  # someone edits the refusal's reason in the database
        conn.execute(
            sa.text("UPDATE hq_audit SET detail = :d WHERE kind = 'DECISION' AND request_id = :r"),
            {"d": json.dumps({"status": "APPROVED", "reason": None}), "r": held.request_id},
        )
    check = audit.verify(engine)
    assert not check.ok and check.broken_at is not None
    assert clean.request_id  # the clean one's entries came first and still verify


def test_review_commands_say_what_is_wrong_and_exit_2(
    desk: Desk, cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    (held,) = desk.ask("FR", request("2026/509", "Apostasy"))
    assert main(["review", "list"]) == 0
    listed = capsys.readouterr().out
    assert held.request_id in listed and "A3-" in listed
    assert main(["review", "show", held.request_id]) == 0
    assert "Apostasy" in capsys.readouterr().out
    assert main(["review", "approve", "nope"]) == 2
    assert "no request 'nope'" in capsys.readouterr().err
    assert main(["review", "refuse", held.request_id, "--reason", "religious"]) == 0
    capsys.readouterr()
    assert main(["review", "refuse", held.request_id, "--reason", "again"]) == 2
    assert "decided already" in capsys.readouterr().err
    assert main(["audit", "verify"]) == 0
    assert "verified" in capsys.readouterr().out
    assert main(["audit", "show", "2026/509"]) == 0
    assert "DECISION" in capsys.readouterr().out


def test_a_request_file_is_checked_before_anything_is_sent(tmp_path: Path) -> None:
    path = tmp_path / "requests.json"
    path.write_text(json.dumps([notice_json("2026/510", facts=7), {"notice_id": "x"}]))
    with pytest.raises(Exception) as caught:
        read_requests(path)
    text = str(caught.value)
    assert "facts" in text and "[1]" in text


def test_a_bureau_cannot_ask_for_another_countrys_notice_nor_reuse_a_request_id(
    desk: Desk,
) -> None:
    (mine,) = desk.ask("FR", request("2026/511"))
    assert mine.status is RequestStatus.APPROVED
    (theirs,) = desk.ask("DE", request("2026/511", "Fraud"))
    assert theirs.status is RequestStatus.INVALID
    assert theirs.reason and "requested by FR" in theirs.reason
    again = request("2026/512", "Fraud", request_id=mine.request_id)
    (reused,) = desk.ask("FR", again)
    assert reused.status is RequestStatus.INVALID and "used already" in (reused.reason or "")
    assert desk.intake.review.get(mine.request_id).status == RequestStatus.APPROVED
    send_requests(desk.settings, "FR", [request("2026/511", request_id=mine.request_id)])
    time.sleep(1)
    assert desk.intake.step() == []  # the same request sent again: taken once
