"""Two HQs on one HQ database (a long-running HQ and a CLI `cancel` or `relay`), racing.

The races are made deterministic with HQ's clock, which HQ calls once it has read a notice's
current version: a clock that waits for the other HQ at a barrier lets both read before
either writes when nothing keeps them apart, and merely times out when HQ locks the notice.
Checked on the notices topics of the real broker; HQ's database is SQLite and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from notice_bus.errors import HQStateError
from notice_bus.hq.publisher import HQ
from notice_bus.hq.tables import HQ_NOTICE
from notice_bus.wire.model import utcnow
from tests.conftest import Bus
from tests.factories import draft
from tests.test_hq_retarget import Wire, on_the_wire

COUNTRIES = ["DE", "FR", "TH"]


def meeting_clock(barrier: threading.Barrier) -> Callable[[], datetime]:
    """A clock that first waits for the other racer (or gives up when the barrier breaks)."""

    def now() -> datetime:
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()
        return utcnow()

    return now


def race(*calls: Callable[[], Any]) -> list[BaseException | None]:
    """Run ``calls`` in threads at once; what each raised (None if nothing)."""
    errors: list[BaseException | None] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            calls[i]()
        except BaseException as exc:  # reported to the test
            errors[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


def hq_current(url: str) -> dict[str, tuple[int, str]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(HQ_NOTICE.c.notice_id, HQ_NOTICE.c.version, HQ_NOTICE.c.status)
            )
            return {r.notice_id: (r.version, r.status) for r in rows}
    finally:
        engine.dispose()


def check_the_wire(wire: dict[str, list[Wire]], current: dict[str, tuple[int, str]]) -> None:
    """One payload per version; per topic and key, versions never go down and the last one
    is HQ's current version (what compaction keeps is what HQ holds)."""
    payloads: dict[tuple[str, int], set[bytes]] = {}
    for cc, records in wire.items():
        last: dict[str, int] = {}
        for w in records:
            payloads.setdefault((w.key, w.event.version), set()).add(w.payload)
            assert w.event.version >= last.get(w.key, 0), f"{cc} {w.key}: went down"
            last[w.key] = w.event.version
        for key, version in last.items():
            assert version == current[key][0], f"{cc} {key}: ends at v{version}"
    assert {k: len(p) for k, p in payloads.items() if len(p) > 1} == {}


def test_an_update_racing_a_cancel_never_overwrites_it(
    make_bus: Callable[..., Bus], hq_url: str
) -> None:
    bus = make_bus(COUNTRIES, hq_database_url=hq_url)
    bus.hq.publish([draft("2026/1", targets=("DE", "TH"))])
    barrier = threading.Barrier(2, timeout=2)
    s = bus.settings.with_(hq_database_url=hq_url)
    with HQ(s, clock=meeting_clock(barrier)) as a, HQ(s, clock=meeting_clock(barrier)) as b:
        update_error, cancel_error = race(
            lambda: a.publish([draft("2026/1", targets=("FR",), weight=90.0)], relay=False),
            lambda: b.cancel("2026/1", "arrested", relay=False),
        )
    assert cancel_error is None
    assert update_error is None or isinstance(update_error, HQStateError), update_error
    bus.hq.relay()
    current = hq_current(hq_url)
    # The cancel stands: after the update (v3) or before it, the update then refused (v2).
    assert current["2026/1"] == (2 if update_error else 3, "WITHDRAWN")
    check_the_wire(on_the_wire(bus.settings, COUNTRIES), current)


def test_two_hqs_creating_the_same_notice_make_two_versions(
    make_bus: Callable[..., Bus], hq_url: str
) -> None:
    bus = make_bus(COUNTRIES, hq_database_url=hq_url)
    barrier = threading.Barrier(2, timeout=2)
    s = bus.settings.with_(hq_database_url=hq_url)
    with HQ(s, clock=meeting_clock(barrier)) as a, HQ(s, clock=meeting_clock(barrier)) as b:
        errors = race(
            lambda: a.publish([draft("2026/2", weight=70.0)], relay=False),
            lambda: b.publish([draft("2026/2", weight=71.0)], relay=False),
        )
    assert errors == [None, None]  # the loser tried again, and made an update
    bus.hq.relay()
    current = hq_current(hq_url)
    assert current["2026/2"] == (2, "ACTIVE")
    check_the_wire(on_the_wire(bus.settings, COUNTRIES), current)


def test_two_relays_at_once_send_each_record_once_in_version_order(
    make_bus: Callable[..., Bus], hq_url: str
) -> None:
    bus = make_bus(COUNTRIES, hq_database_url=hq_url)
    ids = [f"2026/{n}" for n in range(100, 160)]
    bus.hq.publish([draft(n) for n in ids], relay=False)  # 180 rows
    bus.hq.publish([draft(n, weight=60.0) for n in ids[:30]], relay=False)  # 90
    for n in ids[:10] + ids[40:50]:
        bus.hq.cancel(n, "arrested", relay=False)  # 60
    assert bus.hq.pending() == 330
    s = bus.settings.with_(hq_database_url=hq_url)
    start = threading.Barrier(2, timeout=10)
    sent: list[int] = []
    with HQ(s) as a, HQ(s) as b:

        def relay(hq: HQ) -> None:
            start.wait()
            sent.append(hq.relay(batch=20))

        assert race(lambda: relay(a), lambda: relay(b)) == [None, None]
    assert sum(sent) == 330 and bus.hq.pending() == 0
    wire = on_the_wire(bus.settings, COUNTRIES)
    assert sum(len(records) for records in wire.values()) == 330  # none twice
    check_the_wire(wire, hq_current(hq_url))
