"""Acknowledgements and answers whose MAC fails are security events, never deliveries: on the
real broker, the tracker stores them apart (once, whatever the replays), logs them, and the
report, the HTML page and the metrics show them; without ``ack_master_file`` nothing is
checked. Also the status ranking, the text table, and the tracker's migration tracker_0002."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from kafka import KafkaProducer
from prometheus_client import generate_latest

from notice_bus.errors import ConfigError
from notice_bus.reports.formats import to_csv, to_json, to_table
from notice_bus.reports.html import render_html
from notice_bus.reports.metrics import tracker_registry
from notice_bus.reports.report import CountryReport, Status, build_report, security_status
from notice_bus.runtime import migrations
from notice_bus.runtime.db import make_engine
from notice_bus.runtime.kafka import admin_client, kafka_config
from notice_bus.runtime.migrations import HEADS, version_table
from notice_bus.runtime.settings import Settings
from notice_bus.tracker.ingest import Tracker
from notice_bus.tracker.tables import ACK, RESPONSE, SECURITY_EVENT, SENT, TRACKER_TABLES
from notice_bus.trust.ack_mac import NO_MAC, AckSigner, bureau_key
from notice_bus.trust.keys import generate_secret, write_secret
from notice_bus.wire.codec import AvroCodec, load_schema
from notice_bus.wire.model import Ack, AckStatus, Answer, Response, utcnow
from notice_bus.wire.schema_registry import KafkaSchemaStore
from notice_bus.wire.topics import TopicNames
from tests.conftest import Bus
from tests.factories import draft
from tests.test_metrics import promtool
from tests.test_migrations import previous_release

NOTICES = ("2026/1", "2026/2", "2026/3", "2026/4")
NOT_THEIRS = "MAC does not match"  # AckVerifier's reason: another bureau's, or altered


@pytest.fixture
def master() -> bytes:
    return generate_secret()


@pytest.fixture
def master_file(master: bytes, tmp_path: Path) -> str:
    path = tmp_path / "ack-master.key"
    write_secret(path, master)
    return str(path)


@dataclass(frozen=True)
class Sent:
    """Where a record landed, and its value as sent."""

    topic: str
    partition: int
    offset: int
    value: bytes


@dataclass(frozen=True)
class Traffic:
    """FR's acknowledgements and answers: one of each with a good MAC, the others not."""

    good_ack: Sent
    unsigned_ack: Sent
    de_ack: Sent  # signed by DE's bureau, on FR's topic
    altered_ack: Sent  # signed, then changed
    good_answer: Sent
    unsigned_answer: Sent


def send_fr_traffic(bus: Bus, master: bytes) -> Traffic:
    """HQ sends NOTICES to FR; then FR's acknowledgements (RECORDED, one per notice, as the
    acknowledger builds them) and two answers go on FR's topics, each a valid record that
    decodes: only its MAC tells them apart."""
    bus.hq.publish([draft(n, targets=("FR",)) for n in NOTICES])
    bus.pump(lambda: count(bus.tracker.engine, SENT) == len(NOTICES))
    store = KafkaSchemaStore(bus.settings)
    acks = AvroCodec(load_schema("ack"), store)
    answers = AvroCodec(load_schema("response"), store)
    names = TopicNames(bus.settings.topic_prefix)
    fr = AckSigner(bureau_key(master, "FR"), "FR")
    de = AckSigner(bureau_key(master, "DE"), "DE")

    def ack(notice_id: str, adapter_id: str = "fr-1") -> bytes:
        now = utcnow()
        value = Ack("FR", notice_id, 1, AckStatus.RECORDED, now, adapter_id, received_at=now)
        return acks.encode(value.to_avro())

    def answer(notice_id: str) -> bytes:
        value = Response("FR", notice_id, Answer.LOCATED, utcnow(), "officer 7", "in Lyon")
        return answers.encode(value.to_avro())

    producer = KafkaProducer(**kafka_config(bus.settings, "test"))

    def send(topic: str, key: bytes, value: bytes, headers: Any) -> Sent:
        meta = producer.send(topic, key=key, value=value, headers=headers).get(timeout=30)
        return Sent(topic, meta.partition, meta.offset, value)

    try:
        acks_fr, answers_fr = names.acks("FR"), names.responses("FR")
        k1, k2, k3, k4 = (n.encode() for n in NOTICES)
        v1, v2, v3, v4 = (ack(n) for n in NOTICES)
        forged = ack(NOTICES[3], adapter_id="fr-evil")  # sent with v4's MAC
        a1, a2 = answer(NOTICES[0]), answer(NOTICES[1])
        traffic = Traffic(
            good_ack=send(acks_fr, k1, v1, fr.headers(k1, v1)),
            unsigned_ack=send(acks_fr, k2, v2, None),
            de_ack=send(acks_fr, k3, v3, de.headers(k3, v3)),
            altered_ack=send(acks_fr, k4, forged, fr.headers(k4, v4)),
            good_answer=send(answers_fr, k1, a1, fr.headers(k1, a1)),
            unsigned_answer=send(answers_fr, k2, a2, []),
        )
    finally:
        producer.close()
    return traffic


def count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def rows(engine: sa.Engine, *columns: sa.ColumnElement[Any]) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(sa.select(*columns)))


def metrics_text(engine: sa.Engine, settings: Settings) -> str:
    return generate_latest(
        tracker_registry(engine, lambda: build_report(engine, settings))
    ).decode()


@pytest.mark.kafka
def test_records_that_fail_their_mac_are_security_events_not_deliveries(
    make_bus: Callable[..., Bus],
    master: bytes,
    master_file: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = make_bus(["FR", "DE"], ack_master_file=master_file)
    engine = bus.tracker.engine
    with caplog.at_level(logging.ERROR, logger="notice_bus.tracker"):
        sent = send_fr_traffic(bus, master)
        bus.pump(lambda: count(engine, SECURITY_EVENT) == 4 and count(engine, RESPONSE) == 1)
        bus.pump(lambda: bus.tracker.step() == 0)  # nothing else to come

    # The good ones are a delivery and an answer; the others left no trace among them.
    assert rows(engine, ACK.c.notice_id, ACK.c.status) == [
        (NOTICES[0], "RECEIVED"),
        (NOTICES[0], "RECORDED"),
    ]
    assert rows(engine, SENT.c.notice_id, SENT.c.recorded_at.is_not(None)) == [
        (NOTICES[0], True),
        *((n, False) for n in NOTICES[1:]),
    ]
    assert rows(engine, RESPONSE.c.notice_id) == [(NOTICES[0],)]

    # Each bad one is a security event, at its position, with why and its bytes as sent.
    with engine.connect() as conn:
        events = {
            (e.topic, e.partition, e.offset): e for e in conn.execute(SECURITY_EVENT.select())
        }
    expected = {
        sent.unsigned_ack: ("forged_ack", NO_MAC),
        sent.de_ack: ("forged_ack", NOT_THEIRS),
        sent.altered_ack: ("forged_ack", NOT_THEIRS),
        sent.unsigned_answer: ("forged_response", NO_MAC),
    }
    assert events.keys() == {(s.topic, s.partition, s.offset) for s in expected}
    for s, (kind, reason) in expected.items():
        e = events[(s.topic, s.partition, s.offset)]
        assert (e.country, e.kind, e.raw) == ("FR", kind, s.value)
        assert reason in e.reason
    # Logged at ERROR once each, with the position and why.
    logged = [r.getMessage() for r in caplog.records if "security event" in r.getMessage()]
    assert len(logged) == 4
    for s, (_kind, reason) in expected.items():
        [line] = [m for m in logged if f"{s.topic}[{s.partition}]@{s.offset}" in m]
        assert reason in line

    # The report: counted apart, and FR is SECURITY rather than OK.
    reports = build_report(engine, bus.settings)
    [fr] = [r for r in json.loads(to_json(reports)) if r["country"] == "FR"]
    assert (fr["security_events"], fr["status"]) == (4, "SECURITY")
    assert (fr["sent"], fr["recorded"], fr["answered"]) == (4, 1, 1)
    [fr_csv] = [r for r in csv.DictReader(io.StringIO(to_csv(reports))) if r["country"] == "FR"]
    assert fr_csv["security_events"] == "4"
    head, *lines = to_table(reports).splitlines()
    assert re.split(r"\s{2,}", head)[-2:] == ["SECURITY EVENTS", "STATUS"]
    [fr_line] = [line for line in lines if line.startswith("FR")]
    assert fr_line.split()[-2:] == ["4", "SECURITY"]
    page = render_html(engine, bus.settings, reports)
    assert '<div id="security" class="banner security" role="alert">Security events: FR 4.' in page
    assert '<td class="status status-security" title="security events: 4">SECURITY</td>' in page

    # The metrics: a counter per country, which promtool accepts.
    text = metrics_text(engine, bus.settings)
    assert 'notice_bus_security_events_total{country="FR"} 4.0' in text
    assert "# TYPE notice_bus_security_events_total counter" in text
    assert 'notice_bus_status{country="FR",status="SECURITY"} 1.0' in text
    checked = promtool("check", "metrics", stdin=text)
    assert checked.returncode == 0 and not checked.stdout.strip(), checked

    # Read again from the start (the tracker's offsets gone): each is stored once.
    admin = admin_client(bus.settings)
    try:
        admin.delete_groups([f"{bus.settings.topic_prefix}notice-bus.tracker"])
    finally:
        admin.close()
    again = Tracker(bus.settings)
    try:
        read = 0
        for _ in range(200):
            read += again.step()
            if read >= len(NOTICES) + 6 and again.step() == 0:
                break
        assert read >= len(NOTICES) + 6  # the notices, the acknowledgements and answers
    finally:
        again.close()
    assert count(engine, SECURITY_EVENT) == 4 and count(engine, ACK) == 2


@pytest.mark.kafka
def test_without_a_master_secret_nothing_is_checked(
    make_bus: Callable[..., Bus], master: bytes
) -> None:
    bus = make_bus(["FR", "DE"])  # ack_master_file = "": bureaus do not MAC
    engine = bus.tracker.engine
    send_fr_traffic(bus, master)
    bus.pump(lambda: count(engine, RESPONSE) == 2 and count(engine, ACK) == 8)

    assert count(engine, SECURITY_EVENT) == 0
    assert rows(engine, SENT.c.notice_id, SENT.c.recorded_at.is_not(None)) == [
        (n, True) for n in NOTICES
    ]
    reports = build_report(engine, bus.settings)
    [fr] = [r for r in reports if r.country == "FR"]
    assert (fr.security_events, fr.status, fr.recorded) == (0, Status.OK, 4)
    assert "SECURITY" not in to_table(reports)
    page = render_html(engine, bus.settings, reports)
    assert '<div id="security" class="banner security" role="alert" hidden></div>' in page
    assert 'notice_bus_security_events_total{country="FR"} 0.0' in metrics_text(
        engine, bus.settings
    )


def test_a_master_secret_that_cannot_be_read_stops_the_tracker(tmp_path: Path) -> None:
    bad = tmp_path / "short.key"
    bad.write_text("abcd\n", encoding="utf-8")
    for path in (tmp_path / "missing.key", bad):
        settings = Settings(
            tracker_database_url=f"sqlite:///{tmp_path}/tracker.db", ack_master_file=str(path)
        )
        with pytest.raises(ConfigError, match=path.name):
            Tracker(settings)


# --- the status and the table ------------------------------------------------------------------


@pytest.mark.parametrize("status", list(Status))
def test_security_outranks_ok_and_lagging_but_not_what_is_worse(status: Status) -> None:
    worse = {Status.NEVER_CONNECTED, Status.DOWN, Status.STALLED}
    assert security_status(status, 0) is status
    assert security_status(status, 1) is (status if status in worse else Status.SECURITY)


def report(country: str, security_events: int, status: Status) -> CountryReport:
    return CountryReport(
        country, 3, 3, 0, 0, 1.0, 2.0, 3.0, None, status, security_events=security_events
    )


def test_the_table_has_a_security_column_only_when_there_are_events() -> None:
    quiet = [report("FR", 0, Status.OK), report("DE", 0, Status.LAGGING)]
    assert "SECURITY" not in to_table(quiet)
    assert to_table(quiet).splitlines()[0].split()[-1] == "STATUS"
    noisy = [report("FR", 2, Status.SECURITY), report("DE", 0, Status.LAGGING)]
    head, fr, de = to_table(noisy).splitlines()
    assert re.split(r"\s{2,}", head)[-2:] == ["SECURITY EVENTS", "STATUS"]
    assert fr.split()[-2:] == ["2", "SECURITY"] and de.split()[-2:] == ["0", "LAGGING"]
    coloured = to_table(noisy, colour=True)
    assert "\033[35;1mSECURITY" in coloured


# --- the migration -----------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/tracker.db"
    factory: Callable[[], str] = request.getfixturevalue("new_postgres_db")
    return factory()


def revision(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        query = sa.text(f"SELECT version_num FROM {version_table('tracker')}")
        return list(conn.execute(query).scalars())


def test_a_tracker_database_at_0001_gains_the_table_on_open(url: str) -> None:
    from alembic import command

    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            command.upgrade(migrations._config(conn, "tracker"), "tracker_0001")
        assert not sa.inspect(engine).has_table(SECURITY_EVENT.name)
        make_engine(url, TRACKER_TABLES).dispose()  # as the tracker and the report open it
        assert revision(engine) == [HEADS["tracker"]]
        assert sa.inspect(engine).has_table(SECURITY_EVENT.name)
        indexes = {i["name"] for i in sa.inspect(engine).get_indexes(SECURITY_EVENT.name)}
        assert "ix_security_event_country_broker_at" in indexes
        with engine.begin() as conn:
            command.downgrade(migrations._config(conn, "tracker"), "tracker_0001")
        assert not sa.inspect(engine).has_table(SECURITY_EVENT.name)
    finally:
        engine.dispose()


def test_a_database_of_release_0_1_0_is_upgraded_though_create_all_made_the_table(
    url: str,
) -> None:
    """The unversioned path makes the head's missing tables before stamping the baseline and
    upgrading: tracker_0002 then finds its table there."""
    before = previous_release(url)
    make_engine(url, TRACKER_TABLES).dispose()
    engine = make_engine(url)
    try:
        assert revision(engine) == [HEADS["tracker"]]
        assert count(engine, SECURITY_EVENT) == 0
        with engine.connect() as conn:
            kept = conn.execute(sa.text("SELECT count(*) FROM tracker_quarantine")).scalar_one()
        assert kept == len(before["tracker_quarantine"]) > 0
    finally:
        engine.dispose()
