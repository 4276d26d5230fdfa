"""Copy verification end to end (issue 17), on the real broker, with FR's national copy in
SQLite and in PostgreSQL, and nothing played by the test: HQ publishes, updates and cancels;
a real adapter writes FR's copy; the real review service answers the bureau's queries; the
real tracker stores the checks; the report and the escalation webhook tell the story.

After rows of FR's copy are deleted, set back a version, brought back from a cancel, edited,
and a foreign row added, one check against HQ's manifest finds each difference with its
kind and changes nothing; ``mend`` restores the missing, stale and resurrected notices to
HQ's values and leaves the altered and the extra ones, still reported; once FR's officers
have dealt with those and HQ sends a new manifest, the copy is VERIFIED, the report says so,
and the incident opened for the drift is closed at the webhook.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from notice_bus.bureau.copies import CopyChecker
from notice_bus.bureau.sinks.sql import SqlSink
from notice_bus.bureau.sinks.tables import RED_NOTICE
from notice_bus.hq.intake import Intake
from notice_bus.hq.manifest import Manifests
from notice_bus.reports.report import CountryReport, Status, build_report
from notice_bus.tracker.escalation import EscalationResult, Escalator
from notice_bus.tracker.tables import COPY_CHECK, INCIDENT
from notice_bus.wire.manifest import (
    ALTERED,
    EXTRA,
    KINDS,
    MISSING,
    RESURRECTED,
    STALE,
    CopyCheck,
    CopyStatus,
    Manifest,
)
from tests.conftest import Bus, run_in_thread
from tests.factories import draft, local_rows
from tests.test_escalation import Receiver

pytestmark = pytest.mark.kafka

FOREIGN = "2099/1"  # a row FR's bureau added itself: HQ never sent it
EACH_ONCE = dict.fromkeys(KINDS, 1)
NOTHING = EscalationResult(opened=0, closed=0, reminders_sent=0)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fr_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """FR's national copy: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/fr.db"
    make: Callable[[], str] = request.getfixturevalue("new_postgres_db")
    return make()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def edit(url: str, *statements: Any) -> None:
    """What someone with write access to FR's database does, in one transaction."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for s in statements:
                conn.execute(s)
    finally:
        engine.dispose()


def damage(url: str) -> None:
    """Each kind of difference once, straight in FR's ``red_notice`` table."""
    t = RED_NOTICE
    nid = t.c.notice_id
    foreign = dict(local_rows(url)["2026/6"]._mapping, notice_id=FOREIGN, name="Martin")
    edit(
        url,
        sa.delete(t).where(nid == "2026/1"),  # missing
        sa.update(t).where(nid == "2026/2").values(version=1, weight=None),  # stale: v1 again
        sa.update(t)  # resurrected: a cancelled notice set back to ACTIVE
        .where(nid == "2026/3")
        .values(status="ACTIVE", withdrawn_reason=None),
        sa.update(t).where(nid == "2026/5").values(name="Smith"),  # altered
        sa.insert(t).values(**foreign),  # extra
    )


def fr_of(bus: Bus) -> CountryReport:
    reports = {r.country: r for r in build_report(bus.tracker.engine, bus.settings)}
    return reports["FR"]


def stored_checks(bus: Bus) -> int:
    with bus.tracker.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(COPY_CHECK)).scalar_one())


def wait_for_manifest(checker: CopyChecker, sent: Manifest) -> Manifest:
    """The latest manifest on FR's topic, as the bureau reads it: the one HQ just sent."""
    deadline = time.monotonic() + 20
    while (latest := checker.latest_manifest()) is None or latest.manifest_id != sent.manifest_id:
        assert time.monotonic() < deadline, f"manifest {sent.manifest_id} not read: {latest}"
        time.sleep(0.2)
    return latest


def pump(bus: Bus, until: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    """Step the adapters and the tracker until ``until()``; fail saying ``what`` was awaited."""
    try:
        bus.pump(until, timeout_s=timeout_s)
    except AssertionError:
        raise AssertionError(f"{what}: not within {timeout_s:g}s") from None


def check(bus: Bus, checker: CopyChecker, manifests: Manifests) -> CopyCheck:
    """HQ sends FR's manifest; the bureau checks its copy against it and reports; the
    tracker stores the report."""
    [sent] = manifests.publish_all(["FR"])
    before = stored_checks(bus)
    result = checker.check_once(wait_for_manifest(checker, sent))
    assert result.manifest_id == sent.manifest_id
    pump(bus, lambda: stored_checks(bus) == before + 1, "the tracker storing the check", 20)
    return result


def test_a_damaged_copy_is_found_mended_reported_and_escalated_until_verified(
    make_bus: Callable[..., Bus], fr_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    began = time.monotonic()
    bus = make_bus(["FR", "DE"], webhook_url=f"{receiver.url}/hook", manifest_interval_s=0)
    bus.adapter("FR", fr_url)
    bus.adapter("DE", f"sqlite:///{tmp_path}/de.db")
    hq = bus.hq
    hq.publish([draft(f"2026/{n}") for n in range(1, 10)] + [draft("2026/10", targets=("DE",))])
    hq.publish([draft("2026/2", weight=81.5)])  # version 2
    hq.cancel("2026/3", "arrested")
    hq.cancel("2026/4", "arrested")

    def settled() -> bool:  # FR's copy written, and every version acknowledged
        r = local_rows(fr_url)
        if len(r) != 9 or r["2026/2"].version != 2 or r["2026/4"].status != "WITHDRAWN":
            return False
        reports = build_report(bus.tracker.engine, bus.settings)
        sent = {x.country: (x.sent, x.recorded) for x in reports}
        return sent == {"FR": (12, 12), "DE": (13, 13)}

    pump(bus, settled, "FR's copy written and every version acknowledged")
    assert "2026/10" not in local_rows(fr_url)
    hq_names = {n: p.name for n in ("2026/1", "2026/5") if (p := hq.person(n)) is not None}
    assert len(hq_names) == 2, hq_names

    intake = Intake(bus.settings)  # the review service, with its own HQ: another process
    runner, stop = run_in_thread(intake.run)
    manifests = Manifests(hq)
    escalator = Escalator(bus.settings, bus.tracker.engine)
    fr_sink = SqlSink(fr_url)
    reporter = CopyChecker(bus.settings, "FR", fr_sink)  # repair = "report", the default
    mender = CopyChecker(bus.settings.with_(repair="mend"), "FR", fr_sink)
    try:
        # 1. One check finds each difference with its kind, and changes nothing.
        damage(fr_url)
        damaged = local_rows(fr_url)
        first = check(bus, reporter, manifests)
        assert first.status is CopyStatus.DRIFT and first.reason is None, first
        assert first.counts == EACH_ONCE, first
        assert (first.held, first.expected, first.mended) == (9, 9, 0)
        assert sorted(first.examples) == sorted(
            [
                ("2026/1", MISSING, False),
                ("2026/2", STALE, False),
                ("2026/3", RESURRECTED, False),
                ("2026/5", ALTERED, False),
                (FOREIGN, EXTRA, False),
            ]
        )
        assert local_rows(fr_url) == damaged

        # The report shows FR's drift by kind; an incident opens and the receiver is told.
        fr = fr_of(bus)
        assert (fr.status, fr.copy_status, fr.copy_drift) == (Status.COPY_DRIFT, "DRIFT", EACH_ONCE)
        assert fr.copy_verified_at is None and fr.copy_mended == 0
        assert escalator.evaluate() == EscalationResult(opened=1, closed=0, reminders_sent=0)
        [opened] = receiver.accepted
        assert {k: opened[k] for k in ("event", "country", "kind", "differences", "drift")} == {
            "event": "open",
            "country": "FR",
            "kind": "COPY_DRIFT",
            "differences": 5,
            "drift": EACH_ONCE,
        }
        assert opened["manifest_id"] == first.manifest_id

        # 2. Mend: missing, stale and resurrected notices get HQ's values back; the altered
        # and the extra ones are left as they are, and still reported.
        second = check(bus, mender, manifests)
        assert (second.status, second.counts, second.mended) == (CopyStatus.DRIFT, EACH_ONCE, 3)
        assert {(n, m) for n, _, m in second.examples} == {
            ("2026/1", True),
            ("2026/2", True),
            ("2026/3", True),
            ("2026/5", False),
            (FOREIGN, False),
        }
        after = local_rows(fr_url)
        one, two, three = after["2026/1"], after["2026/2"], after["2026/3"]
        assert (one.version, one.status, one.name) == (1, "ACTIVE", hq_names["2026/1"])
        assert (two.version, two.status, two.weight) == (2, "ACTIVE", 81.5)
        assert (three.version, three.status, three.withdrawn_reason) == (2, "WITHDRAWN", "arrested")
        assert after["2026/5"].name == "Smith" and after[FOREIGN].name == "Martin"
        fr = fr_of(bus)
        assert fr.status is Status.COPY_DRIFT and fr.copy_mended == 3
        assert fr.copy_drift == {EXTRA: 1, ALTERED: 1}
        assert sorted(fr.copy_examples) == [("2026/5", ALTERED), (FOREIGN, EXTRA)]
        assert escalator.evaluate() == NOTHING  # still drifting: the incident stays open

        # 3. FR's officers deal with the rest: the foreign row goes, the altered one gets
        # HQ's name back. HQ's next manifest finds the copy VERIFIED.
        t = RED_NOTICE
        edit(
            fr_url,
            sa.delete(t).where(t.c.notice_id == FOREIGN),
            sa.update(t).where(t.c.notice_id == "2026/5").values(name=hq_names["2026/5"]),
        )
        third = check(bus, reporter, manifests)
        assert (third.status, third.counts, third.held, third.expected) == (
            CopyStatus.VERIFIED,
            {},
            9,
            9,
        ), third
        fr = fr_of(bus)
        assert (fr.status, fr.copy_status, fr.copy_drift) == (Status.OK, "VERIFIED", {})
        assert fr.copy_verified_at is not None and fr.copy_verified_at == fr.copy_checked_at
        assert escalator.evaluate() == EscalationResult(opened=0, closed=1, reminders_sent=0)
        assert [(b["event"], b["country"], b["kind"]) for b in receiver.accepted] == [
            ("open", "FR", "COPY_DRIFT"),
            ("close", "FR", "COPY_DRIFT"),
        ]
        assert receiver.accepted[1]["incident_id"] == opened["incident_id"]
        with bus.tracker.engine.connect() as conn:
            [incident] = conn.execute(sa.select(INCIDENT)).all()
        assert (incident.kind, incident.close_sent) == ("COPY_DRIFT", True)
        assert escalator.evaluate() == NOTHING
    finally:
        stop.set()
        runner.join(15)
        intake.close()
        escalator.close()
        reporter.close()
        mender.close()
        fr_sink.close()
    assert not runner.is_alive(), "the review service did not stop"
    took = time.monotonic() - began
    assert took < 60, f"{took:.1f}s"
