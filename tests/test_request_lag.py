"""HQ's own lag: the tracker reads HQ's decisions on the bureaus' requests (``decisions.CC``),
keeps one row per request (a final decision replaces HELD and is never replaced), and the
report shows, per requesting country, requests waiting, time from request to publication,
refusals and invalid ones, in every format and on the HTML page."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from kafka import KafkaProducer

from notice_bus.reports.formats import to_csv, to_json, to_table
from notice_bus.reports.html import render_html
from notice_bus.reports.report import CountryReport, Status, build_report
from notice_bus.runtime import migrations
from notice_bus.runtime.db import make_engine
from notice_bus.runtime.kafka import kafka_config
from notice_bus.runtime.settings import Settings
from notice_bus.tracker.ingest import Tracker
from notice_bus.tracker.requests import REQUEST_COLUMNS, _fold
from notice_bus.tracker.tables import QUARANTINE, REQUEST, TRACKER_TABLES
from notice_bus.wire.codec import AvroCodec, load_schema
from notice_bus.wire.model import utcnow
from notice_bus.wire.request import Decision, RequestStatus
from notice_bus.wire.schema_registry import KafkaSchemaStore
from notice_bus.wire.topics import TopicNames, init_topics

T0 = utcnow().replace(microsecond=0) - timedelta(hours=1)  # Avro keeps milliseconds
NOW = T0 + timedelta(seconds=60)  # the report's clock
FINDING = {
    "rule_id": "NAME-WATCHLIST",
    "category": "name",
    "field": "name",
    "text": "x",
    "explanation": "y",
}
_twice = {"findings": [FINDING, FINDING]}


@pytest.fixture(params=["sqlite", "postgresql"])
def tracker_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        make: Callable[[], str] = request.getfixturevalue("new_postgres_db")
        return make()
    return f"sqlite:///{tmp_path}/tracker.db"


SEDITION = {
    "rule_id": "A3-SEDITION",
    "category": "political",
    "field": "arrest_warrants[0].charge",
    "text": "Sedition",
    "explanation": "sedition is a political offence",
}


def decision(
    request_id: str,
    status: RequestStatus,
    *,
    received_s: float,
    at_s: float = 0,
    country: str = "FR",
    by: str = "reviewer:ana",
    reason: str | None = None,
    findings: Sequence[dict[str, str]] = (),
) -> Decision:
    """A decision on request ``request_id``, received ``received_s`` and decided ``at_s``
    seconds before T0."""
    return Decision(
        request_id=request_id,
        notice_id=f"2026/{request_id[1:]}",
        requesting_country=country,
        status=status,
        received_at=T0 - timedelta(seconds=received_s),
        at=T0 - timedelta(seconds=at_s),
        decided_by="" if status is RequestStatus.HELD else by,
        reason=reason,
        findings=tuple(findings),
    )


def produce(settings: Settings, topic: str, values: Sequence[Decision | bytes]) -> None:
    """One key, so one partition: the records keep their order."""
    codec = AvroCodec(load_schema("request_decision"), KafkaSchemaStore(settings))
    producer = KafkaProducer(**kafka_config(settings, "t", producer=True))
    for v in values:
        payload = v if isinstance(v, bytes) else codec.encode(v.to_avro())
        producer.send(topic, key=b"k", value=payload)
    producer.flush()
    producer.close()


def requests(url: str) -> dict[str, dict[str, Any]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = {r.request_id: dict(r._mapping) for r in conn.execute(sa.select(REQUEST))}
    engine.dispose()
    return found


def quarantined(url: str) -> list[tuple[str, int]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        query = sa.select(QUARANTINE.c.topic, QUARANTINE.c.offset)
        found = sorted((t, o) for t, o in conn.execute(query))
    engine.dispose()
    return found


def step_until(tracker: Tracker, until: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        tracker.step()
        if until():
            return
    raise AssertionError(f"condition not reached within {timeout_s}s")


def report(tracker: Tracker, settings: Settings) -> dict[str, CountryReport]:
    return {r.country: r for r in build_report(tracker.engine, settings, clock=lambda: NOW)}


@pytest.mark.kafka
def test_the_report_shows_hqs_own_lag_per_requesting_country(
    settings: Settings, tracker_db: str
) -> None:
    init_topics(settings, ["FR", "DE"])
    names = TopicNames(settings.topic_prefix)
    held: dict[str, Any] = {"received_s": 100, "at_s": 99, "findings": [FINDING]}
    produce(
        settings,
        names.decisions("FR"),
        [
            decision("r1", RequestStatus.APPROVED, received_s=10, by="policy:auto_publish_clean"),
            decision("r2", RequestStatus.APPROVED, received_s=30),
            decision("r3", RequestStatus.HELD, **held),
            # Two findings of one rule: its id once.
            decision("r3", RequestStatus.REFUSED, reason="no facts", **held | _twice),
            decision("r4", RequestStatus.HELD, received_s=600, at_s=599),
        ],
    )
    produce(
        settings,
        names.decisions("DE"),
        [decision("r5", RequestStatus.INVALID, received_s=5, country="DE", reason="not JSON")],
    )
    tracker = Tracker(settings, database_url=tracker_db)
    try:
        step_until(tracker, lambda: len(requests(tracker_db)) == 5)
        stored = requests(tracker_db)
        assert {k: v["status"] for k, v in stored.items()} == {
            "r1": "APPROVED",
            "r2": "APPROVED",
            "r3": "REFUSED",
            "r4": "HELD",
            "r5": "INVALID",
        }
        assert stored["r3"]["decided_by"] == "reviewer:ana"
        assert stored["r3"]["reason"] == "no facts"
        assert stored["r3"]["rules"] == "NAME-WATCHLIST"
        assert stored["r4"]["decided_at"] is None and stored["r4"]["decided_by"] is None
        assert (stored["r4"]["country"], stored["r5"]["country"]) == ("FR", "DE")

        rows = report(tracker, settings)
        assert rows.keys() == {"FR", "DE"}  # no notices sent to either: rows all the same
        fr, de = rows["FR"], rows["DE"]
        assert (fr.sent, fr.status, de.status) == (0, Status.OK, Status.OK)
        got = (fr.requests_waiting, fr.requests_published, fr.requests_refused)
        assert got == (1, 2, 1)
        assert fr.requests_invalid == 0
        assert fr.request_p50_s == pytest.approx(20, abs=0.01)  # of 10 s and 30 s
        assert fr.request_p95_s == pytest.approx(29, abs=0.01)  # interpolated
        assert fr.request_oldest_waiting_s == pytest.approx(
            660, abs=0.01
        )  # received T0-600, now T0+60
        assert (de.requests_invalid, de.requests_waiting, de.requests_published) == (1, 0, 0)
        assert (de.request_p50_s, de.request_oldest_waiting_s) == (None, None)
        # The window: only requests received since then.
        recent = build_report(
            tracker.engine, settings, clock=lambda: NOW, since=timedelta(seconds=75)
        )
        assert {r.country: r.requests_published for r in recent} == {"FR": 1, "DE": 0}

        # Replays: a HELD after the final decision changes nothing; an unreadable record and
        # one for another country than its topic's are quarantined, and the tracker goes on.
        produce(
            settings,
            names.decisions("FR"),
            [
                decision("r3", RequestStatus.HELD, **held),  # @5
                decision("r1", RequestStatus.HELD, received_s=10),
                b"not an Avro message",  # @7
                decision("r6", RequestStatus.HELD, received_s=1, country="DE"),  # @8
                decision("r4", RequestStatus.APPROVED, received_s=600, at_s=-50),
            ],
        )
        topic = names.decisions("FR")
        step_until(tracker, lambda: requests(tracker_db)["r4"]["status"] == "APPROVED")
        step_until(tracker, lambda: quarantined(tracker_db) == [(topic, 7), (topic, 8)])
        after = requests(tracker_db)
        assert set(after) == {"r1", "r2", "r3", "r4", "r5"}
        assert after["r3"] == stored["r3"]  # still REFUSED, by the same reviewer
        assert after["r1"] == stored["r1"]
        assert after["r4"]["decided_by"] == "reviewer:ana"

        fr = report(tracker, settings)["FR"]
        assert (fr.requests_waiting, fr.requests_published, fr.request_oldest_waiting_s) == (
            0,
            3,
            None,
        )
        assert fr.request_p95_s == pytest.approx(588, abs=0.01)  # of 10, 30 and 650 s
    finally:
        tracker.close()


def test_one_batch_leaves_one_row_per_request() -> None:
    """A batch's decisions on one request fold into one row (PostgreSQL's upsert may touch a
    row once per statement): a final one replaces HELD, nothing replaces a final one."""

    def row(rid: str, status: str, by: str | None) -> tuple[Any, ...]:
        values = {"request_id": rid, "status": status, "decided_by": by}
        return tuple(values.get(c, c) for c in REQUEST_COLUMNS)

    folded = _fold(
        [
            row("a", "HELD", None),
            row("b", "APPROVED", "x"),
            row("a", "REFUSED", "ana"),
            row("a", "HELD", None),
            row("b", "HELD", None),
        ]
    )
    assert [(r["request_id"], r["status"], r["decided_by"]) for r in folded] == [
        ("a", "REFUSED", "ana"),
        ("b", "APPROVED", "x"),
    ]


def _fr(**kw: Any) -> CountryReport:
    values: dict[str, Any] = dict(
        country="FR", sent=0, recorded=0, rejected=0, outstanding=0, p50_lag_s=None,
        p95_lag_s=None, max_lag_s=None, oldest_outstanding_s=None, status=Status.OK,
    )  # fmt: skip
    return CountryReport(**{**values, **kw})


def test_every_format_shows_the_request_figures() -> None:
    fr = _fr(
        requests_waiting=1,
        requests_published=2,
        requests_refused=1,
        request_p50_s=20.0,
        request_p95_s=29.0,
        request_oldest_waiting_s=660.0,
    )
    th = _fr(country="TH", sent=3, recorded=3)  # no requests
    [plain] = json.loads(to_json([fr]))
    assert plain["requests_waiting"] == 1 and plain["request_p95_s"] == 29.0
    assert plain["request_oldest_waiting_s"] == 660.0 and plain["requests_invalid"] == 0
    [row] = list(csv.DictReader(io.StringIO(to_csv([fr]))))
    assert (row["requests_published"], row["request_p50_s"], row["requests_refused"]) == (
        "2",
        "20.0",
        "1",
    )
    table = to_table([fr, th]).splitlines()
    assert "REQ WAIT" in table[0] and "REQ P95" in table[0] and "REQ REFUSED" in table[0]
    assert "1 (11m00s)" in table[1] and "29.0s" in table[1]
    assert table[2].split()[-4:] == ["-", "-", "-", "OK"]
    assert "REQ" not in to_table([th])  # no columns without requests


@pytest.mark.kafka
def test_the_html_page_has_hqs_review(settings: Settings) -> None:
    init_topics(settings, ["FR"])
    produce(
        settings,
        TopicNames(settings.topic_prefix).decisions("FR"),
        [
            decision("r1", RequestStatus.APPROVED, received_s=10),
            decision("r2", RequestStatus.HELD, received_s=7200, findings=[SEDITION]),
            decision("r3", RequestStatus.INVALID, received_s=3),
        ],
    )
    tracker = Tracker(settings)
    try:
        step_until(tracker, lambda: len(requests(settings.tracker_database_url)) == 3)
        reports = build_report(tracker.engine, settings, clock=lambda: NOW)
        page = render_html(tracker.engine, settings, reports, clock=lambda: NOW)
        empty = render_html(tracker.engine, settings, [], clock=lambda: NOW)
    finally:
        tracker.close()
    assert "<h2>HQ's review</h2>" in page and '<table id="reviews">' in page
    assert (
        '<tr data-requester="FR"><td class="country">FR</td>'
        "<td>1</td><td>A3-SEDITION</td><td>2h01m</td><td>1</td><td>10s</td><td>10s</td>"
        "<td>0</td><td>1</td></tr>"
    ) in page
    assert '<table id="reviews">' in empty and "no requests for notices" in empty


def test_a_tracker_database_at_0002_gains_the_table_on_open(tracker_db: str) -> None:
    from alembic import command

    engine = make_engine(tracker_db)
    try:
        with engine.begin() as conn:
            command.upgrade(migrations._config(conn, "tracker"), "tracker_0002")
        assert not sa.inspect(engine).has_table(REQUEST.name)
        make_engine(tracker_db, TRACKER_TABLES).dispose()  # as the tracker and the report do
        with engine.connect() as conn:
            query = sa.text(f"SELECT version_num FROM {migrations.version_table('tracker')}")
            assert list(conn.execute(query).scalars()) == [migrations.HEADS["tracker"]]
        indexes = {i["name"] for i in sa.inspect(engine).get_indexes(REQUEST.name)}
        assert "ix_request_country_status" in indexes
        with engine.begin() as conn:
            command.downgrade(migrations._config(conn, "tracker"), "tracker_0002")
        assert not sa.inspect(engine).has_table(REQUEST.name)
    finally:
        engine.dispose()
