"""The review queue page of the dashboard, on the real broker: a reviewer refuses one held
request and approves another with the page's own buttons in a headless Chromium, and the
approved notice reaches the target country's database; over plain HTTP, the page's answers to
an unknown request, a second decision, a refusal without reason, a cross-site post, and a
bureau's HTML.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit
from urllib.request import urlopen

import pytest
import sqlalchemy as sa

from notice_bus.errors import LocalSystemUnavailable
from notice_bus.hq.review import Arrival, Review
from notice_bus.hq.review_page import review_routes
from notice_bus.wire.model import utcnow
from notice_bus.wire.request import RequestStatus
from tests.conftest import Bus
from tests.factories import notice_json
from tests.test_dashboard import Chromium, chromium, dashboard

__all__ = ["chromium"]  # the fixture, imported for the tests here
pytestmark = pytest.mark.kafka

POLITICAL = "Insulting the head of state"


def finding(
    text: str = "head of state", field: str = "arrest_warrants[0].charge"
) -> dict[str, str]:
    return {
        "rule_id": "A3-POL-INSULT",
        "category": "political",
        "field": field,
        "text": text,
        "explanation": "Offences against a head of state are often political (Article 3)",
    }


class Queue:
    """One test's bus, its HQ's review queue, and a way to put held requests in it."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.review = Review(bus.hq)
        self._n = 0

    def hold(
        self,
        notice_id: str,
        charge: str = POLITICAL,
        age_h: float = 1,
        notice: dict[str, Any] | None = None,
        **kw: Any,
    ) -> str:
        """A request from FR for ``notice_id`` (to DE), held with one finding; its id.
        ``notice``: fields of the notice; ``kw``: the Arrival's (facts, person_status)."""
        self._n += 1
        body = notice_json(
            notice_id,
            target_countries=["DE"],
            arrest_warrants=[{"issuing_country_id": "FR", "charge": charge}],
            **(notice or {}),
        )
        arrival = Arrival(
            request_id=f"req-{self._n}-{notice_id.replace('/', '-')}",
            source=f"t:0:{self._n}",
            country="FR",
            received_at=utcnow() - timedelta(hours=age_h),
            notice=body,
            **kw,
        )
        decision = self.review.receive(
            arrival, findings=[finding()], problem=None, auto_publish=True
        )
        assert decision is not None and decision.status is RequestStatus.HELD
        return arrival.request_id

    def serve(self, open_review: Callable[[], Review] | None = None) -> Iterator[str]:
        routes = review_routes(open_review or (lambda: self.review))
        return dashboard(self.bus, extra_routes=routes, links=[("Review queue", "/review")])


@pytest.fixture
def queue(make_bus: Callable[..., Bus]) -> Queue:
    return Queue(make_bus(["FR", "DE"]))


def in_db(url: str, notice_id: str) -> bool:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            query = sa.text("SELECT 1 FROM red_notice WHERE notice_id = :n")
            return conn.execute(query, {"n": notice_id}).first() is not None
    except sa.exc.OperationalError:  # no table yet
        return False
    finally:
        engine.dispose()


SECTIONS = (
    "Array.from(document.querySelectorAll('section.request')).map((s) => s.dataset.requestId)"
)


def click(chromium: Chromium, request_id: str, action: str, **values: str) -> None:
    """Fill ``values`` (by name, in the request's ``action`` form, or ``reviewer``) and click
    the form's button; wait for the queue to load again."""
    chromium.js("window.beforeClick = true")
    form = (
        f"document.querySelector('section[data-request-id={json.dumps(request_id)}] form.{action}')"
    )
    for name, value in values.items():
        target = (
            "document.getElementById('reviewer')"
            if name == "reviewer"
            else f"{form}.elements.{name}"
        )
        chromium.js(f"{target}.value = {json.dumps(value)}")
    chromium.js(f"{form}.querySelector('button').click()")
    chromium.wait_for(
        "!window.beforeClick && document.readyState === 'complete'"
        " && !!document.getElementById('done')"
    )


def test_a_reviewer_refuses_and_approves_with_the_page_buttons(
    queue: Queue, chromium: Chromium, tmp_path: Path
) -> None:
    refused = queue.hold("2026/601", age_h=3)
    approved = queue.hold("2026/602", age_h=1, facts="A critic of the head of state, he fled")
    for base in queue.serve():
        # The dashboard links to the queue.
        assert 'href="/review"' in urlopen(f"{base}/").read().decode()
        chromium.open(f"{base}/review")
        chromium.wait_for("document.readyState === 'complete' && !!document.querySelector('h1')")
        assert chromium.js(SECTIONS) == [refused, approved]  # oldest first
        assert chromium.js("document.querySelector('h1').textContent").startswith("Review queue: 2")
        marks = chromium.js(
            "Array.from(document.querySelectorAll('mark')).map((m) => m.textContent)"
        )
        assert marks == ["head of state", "head of state"]
        text = chromium.js("document.body.innerText")
        assert "Camille Dubois" in text and "A3-POL-INSULT" in text and POLITICAL in text
        assert "A critic of the head of state, he fled" in text and "waiting 3 h" in text

        # The Refuse button: the request leaves the queue, listed as REFUSED with its reason.
        click(chromium, refused, "refuse", reviewer="Ana Reviewer", reason="Article 3: political")
        assert chromium.js("document.getElementById('done').textContent").startswith("Refused")
        assert chromium.js(SECTIONS) == [approved]
        row = chromium.js(
            f"Array.from(document.querySelector('#decided tr[data-request-id=\"{refused}\"]')"
            ".cells).map((c) => c.textContent)"
        )
        assert row[0] == "REFUSED" and row[5] == "Ana Reviewer" and row[6] == "Article 3: political"
        assert queue.review.get(refused).status == RequestStatus.REFUSED

        # The reviewer's name is remembered; the Approve button publishes the notice.
        assert chromium.js("document.getElementById('reviewer').value") == "Ana Reviewer"
        click(chromium, approved, "approve", note="facts checked")
        assert chromium.js("document.getElementById('done').textContent").startswith("Approved")
        assert chromium.js(SECTIONS) == []
        assert chromium.js("!!document.getElementById('empty')")
        row = queue.review.get(approved)
        assert (row.status, row.decided_by, row.reason) == (
            "APPROVED",
            "Ana Reviewer",
            "facts checked",
        )

    de = f"sqlite:///{tmp_path}/DE.db"
    queue.bus.adapter("DE", de)
    queue.bus.pump(lambda: in_db(de, "2026/602"))
    assert not in_db(de, "2026/601")


def post(base: str, path: str, fields: dict[str, str], **headers: str) -> tuple[int, str, str]:
    """(status, Location, body) of a form post, redirects not followed."""
    where = urlsplit(base)
    conn = http.client.HTTPConnection(where.netloc, timeout=30)
    try:
        conn.request(
            "POST",
            path,
            urlencode(fields),
            {"Content-Type": "application/x-www-form-urlencoded", **headers},
        )
        answer = conn.getresponse()
        return answer.status, answer.getheader("Location") or "", answer.read().decode()
    finally:
        conn.close()


def test_the_page_answers_bad_decisions_and_escapes_what_bureaus_sent(queue: Queue) -> None:
    rid = queue.hold(
        "2026/611",
        charge="<script>alert(1)</script> head of state",
        notice={"name": "<img src=x onerror=alert(2)>"},
        facts='"><b>bold</b>',
    )
    me = {"reviewer": "Ana Reviewer"}
    for base in queue.serve():
        page = urlopen(f"{base}/review").read().decode()
        assert "<script>alert(1)" not in page and "<img src=x" not in page and "<b>bold" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "&lt;img src=x onerror=alert(2)&gt;" in page

        status, _, body = post(base, "/review/no-such-request/approve", me)
        assert status == 404 and "no-such-request" in body and 'href="/review"' in body

        status, _, body = post(base, f"/review/{rid}/refuse", {**me, "reason": "  "})
        assert status == 400 and "needs a reason" in body
        status, _, body = post(base, f"/review/{rid}/approve", {"reviewer": " "})
        assert status == 400 and "reviewer" in body

        host = urlsplit(base).netloc
        status, _, body = post(base, f"/review/{rid}/approve", me, Origin="http://evil.example")
        assert status == 403 and "another site" in body
        assert queue.review.get(rid).status == RequestStatus.HELD

        status, location, _ = post(
            base, f"/review/{rid}/refuse", {**me, "reason": "political"}, Origin=f"http://{host}"
        )
        assert status == 303 and location.startswith("/review?done=Refused")
        status, _, body = post(base, f"/review/{rid}/approve", me)
        assert status == 409 and "decided already" in body
        assert queue.review.get(rid).status == RequestStatus.REFUSED


def test_the_page_says_so_when_hqs_database_is_down(queue: Queue) -> None:
    def down() -> Review:
        raise LocalSystemUnavailable("hq.db unavailable: disk on fire")

    for base in queue.serve(down):
        conn = http.client.HTTPConnection(urlsplit(base).netloc, timeout=30)
        conn.request("GET", "/review")
        answer = conn.getresponse()
        assert answer.status == 503 and "disk on fire" in answer.read().decode()
        conn.close()
        status, _, body = post(base, "/review/x/approve", {"reviewer": "Ana"})
        assert status == 503 and "disk on fire" in body
