"""``notice-bus demo``: the whole path on embedded defaults, in one process.

A local Kafka broker, secured (unless ``KAFKA_BOOTSTRAP_SERVERS`` names a cluster): mutual TLS
with credentials ``notice-bus pki`` issues into ``.notice-bus/pki``, the broker's ACLs, HQ's
signature on every notice, a MAC on every acknowledgement. A tracker, and adapters for twelve
countries, each its own bureau writing to its own SQLite file; one adapter is slow and
one is never started. HQ publishes generated notices, then updates and cancels some. Bureaus
ask for notices too, through HQ's review service: the clean requests are published at once,
a political one waits for a reviewer with its finding named. Then an administrator in France
damages its copy; HQ's manifest shows it and France's copy check mends it. The demo ends with
the report, in which the slow and the absent country, and the request held at HQ, stand out.
The tracker's database stays in ``.notice-bus/``, so ``notice-bus report`` shows the same run
afterwards.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from sqlalchemy import delete, func, select, update

from notice_bus.bureau.adapter import Adapter
from notice_bus.bureau.copies import CopyChecker
from notice_bus.bureau.requests import read_decisions, send_requests
from notice_bus.bureau.sinks.sink import Sink
from notice_bus.bureau.sinks.sql import SqlSink
from notice_bus.bureau.sinks.tables import RED_NOTICE
from notice_bus.errors import AuthenticationFailed
from notice_bus.hq.generate import make_drafts, revise
from notice_bus.hq.intake import Intake
from notice_bus.hq.manifest import Manifests
from notice_bus.hq.publisher import HQ
from notice_bus.reports.formats import to_table
from notice_bus.reports.report import CountryReport, Status, build_report
from notice_bus.runtime.db import make_engine
from notice_bus.runtime.kafka import admin_client
from notice_bus.runtime.local_broker import LocalBroker
from notice_bus.runtime.settings import STATE_DIR, Settings
from notice_bus.tracker.ingest import Tracker
from notice_bus.tracker.tables import TRACKER_TABLES
from notice_bus.trust.cluster import init_cluster
from notice_bus.trust.pki import issue
from notice_bus.trust.principals import bureau_name
from notice_bus.wire.model import ACTIVE, WITHDRAWN, NoticeEvent
from notice_bus.wire.request import NoticeRequest, RequestStatus

#: How the demo's principals connect: mutual TLS (see :func:`_secured_broker`).
PROTOCOL = "SSL"
COUNTRIES = ["FR", "DE", "ES", "IT", "ID", "TH", "BR", "NG", "JP", "AU", "CA", "ZA"]
SLOW, ABSENT = "BR", "NG"
#: What the bureaus ask HQ for: (requesting country, notice id, charge, facts). One charge is
#: political (lèse-majesté): Article 3 keeps it from every country until a reviewer decides.
REQUESTS = [
    ("FR", "2026/90001", "Armed robbery", "Robbed a jeweller's in Lyon at gunpoint"),
    ("FR", "2026/90002", "Homicide", None),
    ("DE", "2026/90003", "Fraud", "Investment fraud, 212 victims"),
    ("TH", "2026/90004", "Lèse-majesté (section 112)", "Criticised the monarchy online"),
]
REQUEST_TARGETS = ["FR", "DE", "ES", "IT", "ID", "TH", "JP", "AU", "CA", "ZA"]


class SlowSink(Sink):
    """A local system that takes ``delay`` seconds per batch, like an overloaded database."""

    def __init__(self, inner: Sink, delay: float) -> None:
        self.inner, self.delay = inner, delay

    def add(self, event: NoticeEvent, partition: int) -> None:
        self.inner.add(event, partition)

    def flush(self) -> None:
        time.sleep(self.delay)
        self.inner.flush()

    def discard(self, partitions: Iterable[int]) -> None:
        self.inner.discard(partitions)

    def close(self) -> None:
        self.inner.close()


def run_demo(settings: Settings, *, notices: int = 300) -> int:
    demo_dir = STATE_DIR / "demo"
    shutil.rmtree(demo_dir, ignore_errors=True)
    for path in STATE_DIR.glob("*.db*"):
        path.unlink()
    demo_dir.mkdir(parents=True)

    broker, as_ = _cluster(settings)
    settings = as_("admin")
    _say(f"Kafka at {settings.bootstrap_servers} ({settings.security_protocol})")
    stop = threading.Event()
    threads: list[threading.Thread] = []
    intake: Intake | None = None
    try:
        init_cluster(settings, COUNTRIES)
        _say(f"topics ready for {len(COUNTRIES)} countries: {', '.join(COUNTRIES)}")
        if broker is not None:
            _show_refusal(broker, settings)
        threads.append(_start(Tracker(as_("tracker")).run, stop, "tracker"))
        for cc in COUNTRIES:
            if cc == ABSENT:
                continue
            sink: Sink = SqlSink(f"sqlite:///{demo_dir / cc}.db")
            conf = as_(bureau_name(cc))
            if cc == SLOW:
                sink, conf = SlowSink(sink, delay=1.0), conf.with_(batch_size=5)
            threads.append(_start(Adapter(conf, {cc: sink}).run, stop, f"adapter-{cc}"))
        _say(
            f"adapters running for {len(COUNTRIES) - 1} countries, each as its own bureau"
            f" ({SLOW} deliberately slow, {ABSENT} never started)"
        )
        intake = Intake(as_("hq"))
        threads.append(_start(intake.run, stop, "review"))
        _say(f"HQ's review service screens requests ({len(intake.rules)} rules)")
        expected = _publish(as_("hq"), notices, stop)
        for cc, more in _request(as_).items():
            expected[cc] += more
        _await_quiet(settings, stop)
        _check_copies(as_, demo_dir)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        if intake is not None:
            intake.close()
        if broker is not None:
            broker.stop()
    reports = build_report(make_engine(settings.tracker_database_url, TRACKER_TABLES), settings)
    print("\n" + to_table(reports) + "\n")
    _check_local_copies(demo_dir, expected)
    _say("run `.venv/bin/notice-bus report` (or --format json) to see this report again")
    return 0


def _cluster(settings: Settings) -> tuple[LocalBroker | None, Callable[[str], Settings]]:
    """The broker, and each principal's settings on it: a secured local broker, or else the
    configured cluster with the configured settings, this run's topics kept apart."""
    if "KAFKA_BOOTSTRAP_SERVERS" not in os.environ:
        _say("starting a local Kafka broker (the first run fetches its jars with Maven)")
        return _secured_broker(settings)
    shared = settings.with_(topic_prefix=f"demo-{uuid.uuid4().hex[:6]}.")
    return None, lambda _principal: shared


def _secured_broker(settings: Settings) -> tuple[LocalBroker, Callable[[str], Settings]]:
    """A local broker that lets in only the principals ``notice-bus pki`` issued (kept in
    .notice-bus/pki, issued once), each reached by mutual TLS: a new connection costs less
    than with SCRAM (bench/results.json, ``secured.handshake_*``)."""
    pki = STATE_DIR / "pki"
    issue(pki, countries=COUNTRIES, protocol=PROTOCOL)
    _say(
        f"credentials in {pki}/: the CA (ca.crt), a certificate, key and settings file"
        " (notice-bus.toml) for admin, hq, tracker and each bureau-CC; HQ's signing key"
        " (hq/signing.key) under the root in signing/; principals.toml"
    )
    broker = LocalBroker(pki=pki)
    broker.start()
    bootstrap = broker.tls_bootstrap_servers if PROTOCOL == "SSL" else broker.bootstrap_servers

    def as_(principal: str) -> Settings:
        return settings.overlay(pki / principal / "notice-bus.toml").with_(
            bootstrap_servers=bootstrap, security_protocol=PROTOCOL
        )

    return broker, as_


def _show_refusal(broker: LocalBroker, settings: Settings) -> None:
    """What a user the cluster does not know is told: in words, at once."""
    stranger = settings.with_(
        bootstrap_servers=broker.bootstrap_servers,
        security_protocol="SASL_SSL",
        sasl_username="stranger",
        sasl_password="a guess",
    )
    began = time.monotonic()
    try:
        admin_client(stranger).close()
    except AuthenticationFailed as exc:
        _say(f"an unknown user is refused in {time.monotonic() - began:.1f} s: {exc}")
        return
    _say("WARNING: the broker let in a user it does not know")


def _publish(settings: Settings, count: int, stop: threading.Event) -> dict[str, int]:
    """HQ's part: publish in waves, then update and cancel some. Returns active notices per
    targeted country, for the final check."""
    rng = random.Random(7)
    drafts = make_drafts(count, countries=COUNTRIES)
    with HQ(settings) as hq:
        wave = max(1, count // 15)
        for i in range(0, count, wave):
            hq.publish(drafts[i : i + wave])
            _progress(settings, f"published {min(i + wave, count)}/{count}")
            time.sleep(0.5)
        updated = rng.sample(drafts, k=count // 8)
        hq.publish([revise(d, rng) for d in updated])
        cancelled = rng.sample(drafts, k=count // 20)
        for d in cancelled:
            hq.cancel(d.notice_id, "wanted person arrested")
        _say(f"HQ: {count} published, {len(updated)} updated, {len(cancelled)} cancelled")
    gone = {d.notice_id for d in cancelled}
    active: dict[str, int] = dict.fromkeys(COUNTRIES, 0)
    for d in drafts:
        if d.notice_id not in gone:
            for cc in d.target_countries or COUNTRIES:
                active[cc] += 1
    return active


def _request(as_: Callable[[str], Settings]) -> dict[str, int]:
    """The bureaus' part: each asks for notices on its own requests topic and waits for HQ's
    decisions. Returns, per country, how many published notices target it."""
    asked: dict[str, list[NoticeRequest]] = {}
    for cc, notice_id, charge, facts in REQUESTS:
        notice = {
            "notice_id": notice_id,
            "name": "Demo",
            "forename": f"Person {notice_id[-1]}",
            "date_of_birth": "1980/01/01",
            "nationalities": [cc],
            "arrest_warrants": [{"issuing_country_id": cc, "charge": charge}],
            "target_countries": [c for c in REQUEST_TARGETS if c != cc],
        }
        asked.setdefault(cc, []).append(
            NoticeRequest(notice=json.dumps(notice, ensure_ascii=False), facts=facts)
        )
    published = dict.fromkeys(REQUEST_TARGETS, 0)
    for cc, requests in asked.items():
        bureau = as_(bureau_name(cc))
        send_requests(bureau, cc, requests)
        ids = {r.request_id for r in requests}
        heard = read_decisions(bureau, cc, wait_for=ids, timeout_s=60)
        final = {d.request_id: d for d in heard if d.request_id in ids}
        for d in final.values():
            why = "; ".join(f"{f['rule_id']} on {f['text']!r}" for f in d.findings)
            _say(
                f"{cc} asked for {d.notice_id}: {d.status.value}"
                + (f" by {d.decided_by}" if d.status is RequestStatus.APPROVED else "")
                + (f", held for a reviewer: {why}" if d.status is RequestStatus.HELD else "")
            )
            if d.status is RequestStatus.APPROVED:
                for target in REQUEST_TARGETS:
                    published[target] += target != cc
    _say("a reviewer decides with `notice-bus review list|show|approve|refuse` or the dashboard")
    return published


def _check_copies(as_: Callable[[str], Settings], demo_dir: Path) -> None:
    """France's administrator deletes a notice and a restore brings a cancelled one back; HQ
    sends manifests, Germany's copy verifies, France's check finds both and mends them."""
    t = RED_NOTICE
    engine = make_engine(f"sqlite:///{demo_dir / 'FR'}.db")
    with engine.begin() as conn:
        first = select(t.c.notice_id).order_by(t.c.notice_id).limit(1)
        gone = conn.execute(first.where(t.c.status == ACTIVE)).scalar()
        back = conn.execute(first.where(t.c.status == WITHDRAWN)).scalar()
        conn.execute(delete(t).where(t.c.notice_id == gone))
        conn.execute(update(t).where(t.c.notice_id == back).values(status=ACTIVE))
    engine.dispose()
    _say(f"FR: an administrator deleted {gone}; a restore brought cancelled {back} back")
    with HQ(as_("hq")) as hq:
        sent = Manifests(hq).publish_all(["DE", "FR"])
    _say("HQ: manifests sent, " + ", ".join(f"{m.country} {m.count} notices" for m in sent))
    for cc, repair in (("DE", "report"), ("FR", "mend"), ("FR", "report")):
        sink = SqlSink(f"sqlite:///{demo_dir / cc}.db")
        checker = CopyChecker(as_(bureau_name(cc)).with_(repair=repair), cc, sink)
        try:
            manifest = checker.latest_manifest()
            result = None if manifest is None else checker.check_once(manifest)
        finally:
            checker.close()
            sink.close()
        if result is None:
            _say(f"{cc}: no manifest on its topic")
            continue
        drift = ", ".join(f"{n} {kind}" for kind, n in result.counts.items() if n)
        _say(
            f"{cc}: copy check ({repair}): {result.status}, {result.held} held"
            + (f"; {drift}; {result.mended} mended" if drift else "")
        )
    settings = as_("tracker")
    engine = make_engine(settings.tracker_database_url, TRACKER_TABLES)
    deadline = time.monotonic() + 20  # until the tracker has the last check, for the report
    while time.monotonic() < deadline:
        copies = {r.country: r.copy_status for r in build_report(engine, settings)}
        if copies.get("FR") == "VERIFIED" and copies.get("DE") == "VERIFIED":
            break
        time.sleep(0.5)
    engine.dispose()


def _await_quiet(settings: Settings, stop: threading.Event, timeout_s: float = 120) -> None:
    """Wait until every healthy country has taken in everything (the slow one may not)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reports = _progress(settings, "waiting for the countries to catch up")
        healthy = [r for r in reports if r.country not in (SLOW, ABSENT)]
        if healthy and all(r.outstanding == 0 for r in healthy):
            time.sleep(3)  # let the slow country show how far behind it is
            _progress(settings, "done")
            return
        time.sleep(1)
    _say("gave up waiting; the report shows who is behind")


def _progress(settings: Settings, what: str) -> list[CountryReport]:
    engine = make_engine(settings.tracker_database_url, TRACKER_TABLES)
    reports = build_report(engine, settings)
    engine.dispose()
    sent = sum(r.sent for r in reports)
    recorded = sum(r.recorded for r in reports)
    behind = [r.country for r in reports if r.status is not Status.OK]
    _say(
        f"{what:<40} deliveries recorded {recorded}/{sent}"
        + (f"  behind: {', '.join(behind)}" if behind else "")
    )
    return reports


def _check_local_copies(demo_dir: Path, expected: dict[str, int]) -> None:
    for cc in COUNTRIES:
        path = demo_dir / f"{cc}.db"
        if not path.exists():
            _say(f"{cc}: no local database (adapter never started)")
            continue
        engine = make_engine(f"sqlite:///{path}")
        with engine.connect() as conn:
            n = conn.execute(
                select(func.count()).select_from(RED_NOTICE).where(RED_NOTICE.c.status == ACTIVE)
            ).scalar_one()
        engine.dispose()
        mark = "ok" if n == expected[cc] else "behind"
        _say(f"{cc}: {n}/{expected[cc]} active notices in {path} ({mark})")


def _start(target: object, stop: threading.Event, name: str) -> threading.Thread:
    t = threading.Thread(target=target, args=(stop,), name=name, daemon=True)  # type: ignore[arg-type]
    t.start()
    return t


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)
