"""Copy verification, HQ's side: the bureaus' copy checks on their acks topics, on the real
broker: stored by the tracker (never as acknowledgements), in the report (COPY_DRIFT, the
drift by kind, copy_verified_at) and its formats, the HTML page, the escalation of a copy
that drifted, and the metrics; a forged one is a security event, a bad one quarantined."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from kafka import KafkaProducer
from prometheus_client import CollectorRegistry, generate_latest

from notice_bus.reports.formats import copy_cell, to_csv, to_json, to_table
from notice_bus.reports.html import render_html
from notice_bus.reports.metrics import ReportCollector
from notice_bus.reports.report import CountryReport, Status, build_report, copy_status
from notice_bus.runtime.kafka import kafka_config
from notice_bus.runtime.settings import Settings
from notice_bus.tracker.copies import unmended
from notice_bus.tracker.escalation import EscalationResult, Escalator
from notice_bus.tracker.tables import ACK, COPY_CHECK, INCIDENT, QUARANTINE, SECURITY_EVENT
from notice_bus.trust.ack_mac import AckSigner, bureau_key
from notice_bus.trust.keys import generate_secret, write_secret
from notice_bus.wire.codec import AvroCodec, load_schema
from notice_bus.wire.manifest import CHECK, CopyCheck, CopyStatus, kind_header
from notice_bus.wire.model import utcnow
from notice_bus.wire.schema_registry import KafkaSchemaStore
from notice_bus.wire.topics import TopicNames
from tests.conftest import Bus
from tests.factories import draft
from tests.test_escalation import Receiver

NOTICES = ("2026/11", "2026/12")
NOTHING = EscalationResult(opened=0, closed=0, reminders_sent=0)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def send(
    settings: Settings,
    check: CopyCheck,
    *,
    headers: list[tuple[str, bytes]] | None = None,
    value: bytes | None = None,
    signer: AckSigner | None = None,
) -> None:
    """``check`` on its country's acks topic, as the bureau's CopyChecker reports it."""
    codec = AvroCodec(load_schema("copy_check"), KafkaSchemaStore(settings))
    value = codec.encode(check.to_avro()) if value is None else value
    key = check.country.encode()
    if headers is None:
        headers = kind_header(CHECK) + (signer.headers(key, value) if signer else [])
    producer = KafkaProducer(**kafka_config(settings, "test-bureau"), acks="all")
    try:
        topic = TopicNames(settings.topic_prefix).acks(check.country)
        producer.send(topic, key=key, value=value, headers=headers).get(timeout=30)
    finally:
        producer.close()


def drift_fr(manifest_id: str = "m-fr-1") -> CopyCheck:
    return CopyCheck(
        "FR",
        manifest_id,
        CopyStatus.DRIFT,
        held=8,
        expected=10,
        counts={"missing": 3, "altered": 1},
        examples=(
            ("2026/1", "missing", False),
            ("2026/2", "missing", False),
            ("2026/3", "missing", False),
            ("2026/4", "altered", False),
        ),
    )


def verified(country: str, manifest_id: str) -> CopyCheck:
    return CopyCheck(country, manifest_id, CopyStatus.VERIFIED, held=10, expected=10)


def by_country(reports: list[CountryReport]) -> dict[str, CountryReport]:
    return {r.country: r for r in reports}


def scrape(reports: list[CountryReport]) -> str:
    registry = CollectorRegistry()
    registry.register(ReportCollector(lambda: reports))
    return generate_latest(registry).decode()


@pytest.mark.kafka
def test_copy_checks_are_reported_escalated_and_never_acknowledgements(
    make_bus: Callable[..., Bus], receiver: Receiver, tmp_path: Path
) -> None:
    bus = make_bus(["FR", "DE"], webhook_url=f"{receiver.url}/hook")
    engine, settings = bus.tracker.engine, bus.settings
    for cc in ("FR", "DE"):
        bus.adapter(cc, f"sqlite:///{tmp_path}/{cc.lower()}.db")
    bus.hq.publish([draft(n) for n in NOTICES])
    recorded = ACK.c.status == "RECORDED"

    def acks_recorded() -> int:
        with engine.connect() as conn:
            query = sa.select(sa.func.count()).select_from(ACK).where(recorded)
            return int(conn.execute(query).scalar_one())

    bus.pump(lambda: acks_recorded() == 4)
    acks_before = count(engine, ACK)

    first = drift_fr()
    send(settings, first)
    send(settings, verified("DE", "m-de-1"))
    bus.pump(lambda: count(engine, COPY_CHECK) == 2)

    r = by_country(build_report(engine, settings))
    fr, de = r["FR"], r["DE"]
    assert fr.status is Status.COPY_DRIFT
    assert (fr.copy_status, fr.copy_drift, fr.copy_mended) == (
        "DRIFT",
        {"missing": 3, "altered": 1},
        0,
    )
    assert fr.copy_verified_at is None and fr.copy_checked_at is not None
    assert [n for n, _ in fr.copy_examples] == ["2026/1", "2026/2", "2026/3", "2026/4"]
    assert de.status is Status.OK and de.copy_status == "VERIFIED" and de.copy_drift == {}
    assert de.copy_verified_at == de.copy_checked_at is not None
    # Never acknowledgements: what was sent and recorded is as before, no ack row added.
    assert count(engine, ACK) == acks_before
    assert [(x.sent, x.recorded, x.outstanding) for x in (fr, de)] == [(2, 2, 0), (2, 2, 0)]
    assert count(engine, QUARANTINE) == 0 and count(engine, SECURITY_EVENT) == 0
    assert next(iter(r)) == "FR"  # worst first

    # Formats: every field in JSON and CSV, a compact column in the table.
    [fr_json] = [d for d in json.loads(to_json(list(r.values()))) if d["country"] == "FR"]
    assert fr_json["status"] == "COPY_DRIFT" and fr_json["copy_drift"] == {
        "missing": 3,
        "altered": 1,
    }
    assert fr_json["copy_examples"][0] == {"notice_id": "2026/1", "kind": "missing"}
    [de_json] = [d for d in json.loads(to_json(list(r.values()))) if d["country"] == "DE"]
    assert de_json["copy_verified_at"].startswith(str(utcnow().year))
    rows = {row["country"]: row for row in csv.DictReader(io.StringIO(to_csv(list(r.values()))))}
    assert rows["FR"]["copy_drift"] == "missing=3 altered=1"
    assert rows["FR"]["copy_status"] == "DRIFT" and rows["DE"]["copy_status"] == "VERIFIED"
    head, *lines = to_table(list(r.values())).splitlines()
    assert re.split(r"\s{2,}", head)[-2:] == ["COPY", "STATUS"]
    table = {line.split()[0]: line for line in lines}
    assert table["FR"].endswith("drift 4  COPY_DRIFT")
    assert re.search(r"ok \d+\.\ds\s+OK$", table["DE"])

    # The HTML page: a Copy column and the national copies table.
    page = render_html(engine, settings, list(r.values()))
    assert '<td class="status status-copy-drift">COPY_DRIFT</td>' in page
    assert '<td class="copy copy-drift" title="missing 3, altered 1">drift 4</td>' in page
    assert '<table id="copies">' in page and '<tr data-copy="FR">' in page
    assert "<td>missing 3, altered 1</td>" in page

    # The gauges.
    text = scrape(list(r.values()))
    assert 'notice_bus_copy_drift{country="FR",kind="missing"} 3.0' in text
    assert 'notice_bus_copy_drift{country="FR",kind="altered"} 1.0' in text
    assert 'notice_bus_copy_drift{country="DE",kind="missing"} 0.0' in text
    assert 'notice_bus_copy_verified_timestamp_seconds{country="DE"}' in text
    assert 'notice_bus_copy_verified_timestamp_seconds{country="FR"}' not in text
    assert 'notice_bus_status{country="FR",status="COPY_DRIFT"} 1.0' in text

    # Escalation: an incident opens for FR's copy, once.
    escalator = Escalator(settings, engine)
    try:
        assert escalator.evaluate() == EscalationResult(opened=1, closed=0, reminders_sent=0)
        assert escalator.evaluate() == NOTHING
        [opened] = receiver.accepted
        assert {k: opened[k] for k in ("event", "country", "kind", "differences", "drift")} == {
            "event": "open",
            "country": "FR",
            "kind": "COPY_DRIFT",
            "differences": 4,
            "drift": {"missing": 3, "altered": 1},
        }
        assert opened["manifest_id"] == "m-fr-1" and opened["notices"][0] == "2026/1"

        # A replayed check stores nothing twice; an UNVERIFIABLE one leaves the incident open.
        send(settings, first)
        unverifiable = CopyCheck(
            "FR", "m-fr-2", CopyStatus.UNVERIFIABLE, 0, 10, reason="cannot list"
        )
        send(settings, unverifiable)
        bus.pump(lambda: count(engine, COPY_CHECK) == 3)
        bus.pump(lambda: bus.tracker.step() == 0)
        assert count(engine, COPY_CHECK) == 3
        fr = by_country(build_report(engine, settings))["FR"]
        assert (fr.status, fr.copy_status, fr.copy_reason) == (
            Status.OK,
            "UNVERIFIABLE",
            "cannot list",
        )
        assert copy_cell(fr, utcnow()) == "unverif."
        assert escalator.evaluate() == NOTHING

        # A check of the same manifest again (after a mend) is a check of its own: the
        # latest, VERIFIED. FR is OK again, and the incident closes.
        send(settings, verified("FR", "m-fr-2"))
        bus.pump(lambda: count(engine, COPY_CHECK) == 4)
        fr = by_country(build_report(engine, settings))["FR"]
        assert (fr.status, fr.copy_status, fr.copy_drift) == (Status.OK, "VERIFIED", {})
        assert fr.copy_verified_at == fr.copy_checked_at
        assert escalator.evaluate() == EscalationResult(opened=0, closed=1, reminders_sent=0)
        with engine.connect() as conn:
            [incident] = conn.execute(sa.select(INCIDENT)).all()
        assert incident.kind == "COPY_DRIFT" and incident.closed_at is not None
        assert [(b["event"], b["kind"]) for b in receiver.accepted] == [
            ("open", "COPY_DRIFT"),
            ("close", "COPY_DRIFT"),
        ]
        assert escalator.evaluate() == NOTHING
    finally:
        escalator.close()
    assert 'notice_bus_copy_drift{country="FR",kind="missing"} 0.0' in scrape(
        build_report(engine, settings)
    )
    assert count(engine, ACK) == acks_before


@pytest.mark.kafka
def test_forged_and_unreadable_copy_checks_are_kept_apart(
    make_bus: Callable[..., Bus], tmp_path: Path
) -> None:
    master = generate_secret()
    write_secret(tmp_path / "master.key", master)
    bus = make_bus(["FR", "DE"], ack_master_file=str(tmp_path / "master.key"))
    engine, settings = bus.tracker.engine, bus.settings
    fr = AckSigner(bureau_key(master, "FR"), "FR")
    de = AckSigner(bureau_key(master, "DE"), "DE")

    send(settings, drift_fr("m-good"), signer=fr)  # stored
    send(settings, drift_fr("m-unsigned"))  # no MAC: a security event
    send(settings, drift_fr("m-de"), signer=de)  # DE's MAC on FR's topic: a security event
    # FR's MAC, a copy check of DE's inside: read, and quarantined; so is garbage.
    wrong = CopyCheck("DE", "m-other", CopyStatus.VERIFIED, 1, 1)
    codec = AvroCodec(load_schema("copy_check"), KafkaSchemaStore(settings))
    value = codec.encode(wrong.to_avro())
    send(
        settings,
        drift_fr("m-wrong"),
        value=value,
        headers=kind_header(CHECK) + fr.headers(b"FR", value),
    )
    garbage = b"not avro at all"
    send(
        settings,
        drift_fr("m-garbage"),
        value=garbage,
        headers=kind_header(CHECK) + fr.headers(b"FR", garbage),
    )
    bus.pump(lambda: count(engine, SECURITY_EVENT) == 2 and count(engine, QUARANTINE) == 2)
    bus.pump(lambda: bus.tracker.step() == 0)

    with engine.connect() as conn:
        stored = conn.execute(sa.select(COPY_CHECK.c.manifest_id)).scalars().all()
        kinds = conn.execute(sa.select(SECURITY_EVENT.c.kind)).scalars().all()
    assert stored == ["m-good"]
    assert kinds == ["forged_ack", "forged_ack"]
    assert count(engine, ACK) == 0
    assert by_country(build_report(engine, settings))["FR"].status is Status.SECURITY


# --- the rules, without a broker -----------------------------------------------------------------


@pytest.mark.parametrize("status", list(Status))
def test_copy_drift_outranks_ok_only(status: Status) -> None:
    assert copy_status(status, False) is status
    assert copy_status(status, True) is (Status.COPY_DRIFT if status is Status.OK else status)


def test_unmended_differences_by_kind() -> None:
    counts = {"missing": 3, "stale": 2, "altered": 1}
    assert unmended(counts, 0, ()) == {"missing": 3, "stale": 2, "altered": 1}
    examples = (("a", "missing", True), ("b", "missing", False), ("c", "stale", True))
    assert unmended(counts, 2, examples) == {"missing": 2, "stale": 1, "altered": 1}
    # Mended beyond the examples: off the mendable kinds, never off altered or extra.
    assert unmended(counts, 5, ()) == {"altered": 1}
    assert unmended({"extra": 2}, 9, ()) == {"extra": 2}


def test_the_copy_cell() -> None:
    now = utcnow()

    def report(**kw: Any) -> CountryReport:
        return CountryReport("FR", 0, 0, 0, 0, None, None, None, None, Status.OK, **kw)

    assert copy_cell(report(), now) == "-"
    at = now - timedelta(seconds=125)
    assert copy_cell(report(copy_status="VERIFIED", copy_checked_at=at), now) == "ok 2m05s"
    assert copy_cell(report(copy_status="DRIFT", copy_drift={"missing": 5}), now) == "drift 5"
    assert copy_cell(report(copy_status="DRIFT", copy_mended=3), now) == "mended 3"
    assert copy_cell(report(copy_status="UNVERIFIABLE"), now) == "unverif."
    assert "COPY" not in to_table([report()])


def test_the_copy_alert_rules_fire(tmp_path: Path) -> None:
    from tests.test_metrics import ALERTS, promtool

    tests = tmp_path / "copy_alerts_test.yml"
    tests.write_text(
        f"""
rule_files: [{ALERTS}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: notice_bus_copy_drift{{country="FR",kind="missing"}}
        values: 3x30
      - series: notice_bus_copy_drift{{country="FR",kind="altered"}}
        values: 1x30
      - series: notice_bus_copy_drift{{country="DE",kind="missing"}}
        values: 0x30
    alert_rule_test:
      - eval_time: 10m
        alertname: NoticeBusCopyDrift
        exp_alerts: []
      - eval_time: 20m
        alertname: NoticeBusCopyDrift
        exp_alerts:
          - exp_labels: {{severity: warning, country: FR}}
            exp_annotations:
              summary: "FR's national copy differs from HQ's records in 4 notices"
              description: "See the report's COPY column and `notice-bus report --format json`."
""",
        encoding="utf-8",
    )
    tested = promtool("test", "rules", str(tests))
    assert tested.returncode == 0, tested.stdout + tested.stderr
