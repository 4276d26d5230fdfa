"""Countries made slow, stalled, down, never connected, quiet and clock-skewed, on the real
broker: the tracker's statuses and figures must say which is which, and the quiet country
must raise no alarm."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from kafka import TopicPartition

from notice_bus.bureau.adapter import Adapter
from notice_bus.bureau.channel import respond
from notice_bus.bureau.metrics import AdapterMetrics
from notice_bus.bureau.sinks.sql import SqlSink
from notice_bus.cli.demo import SlowSink
from notice_bus.hq.publisher import HQ
from notice_bus.reports.formats import to_json
from notice_bus.reports.metrics import ReportCollector
from notice_bus.reports.report import CountryReport, Status, build_report
from notice_bus.runtime.kafka import admin_client
from notice_bus.runtime.prometheus import serve
from notice_bus.runtime.settings import Settings
from notice_bus.tracker.ingest import Tracker
from notice_bus.wire.groups import group_id
from notice_bus.wire.model import Answer, utcnow
from notice_bus.wire.topics import TopicNames, init_topics
from tests.factories import draft
from tests.support.tcp_proxy import TcpProxy
from tests.test_cli import REPORT_KEYS

pytestmark = pytest.mark.kafka
ALL = ["FR", "ES", "IT", "DE", "NG", "JP", "TH"]


class Runner:
    """Adapters and the tracker in threads, each stoppable on its own."""

    def __init__(self) -> None:
        self.stops: dict[str, threading.Event] = {}
        self.threads: dict[str, threading.Thread] = {}

    def start(self, name: str, target: Callable[[threading.Event], None]) -> None:
        stop = threading.Event()
        thread = threading.Thread(target=target, args=(stop,), daemon=True, name=name)
        self.stops[name], self.threads[name] = stop, thread
        thread.start()

    def stop(self, name: str) -> None:
        self.stops[name].set()
        self.threads[name].join(30)

    def stop_all(self) -> None:
        for name in list(self.threads):
            self.stop(name)


def committed(settings: Settings, country: str) -> int:
    """How many of the country's notices its consumer group has committed, broker side."""
    admin = admin_client(settings)
    try:
        topic = TopicNames(settings.topic_prefix).notices(country)
        tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
        group = group_id(settings, country)
        offsets = admin.list_group_offsets({group: tps}).get(group, {})
        return sum(max(o.offset, 0) for o in offsets.values())
    finally:
        admin.close()


@pytest.fixture
def runner() -> Iterator[Runner]:
    r = Runner()
    yield r
    r.stop_all()


def until(
    check: Callable[[], bool], timeout_s: float = 60, show: Callable[[], object] = str
) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not reached in time: {show()}"
        time.sleep(0.3)


def test_each_kind_of_trouble_is_told_apart(
    settings: Settings, new_postgres_db: Callable[[], str], tmp_path: Path, runner: Runner
) -> None:
    s = settings.with_(
        lag_threshold_s=4.0,
        stall_after_s=5.0,
        sample_interval_s=1.0,
        window_s=120.0,
        down_after_s=5.0,
    )
    init_topics(s, ALL)
    tracker = Tracker(s)
    runner.start("tracker", tracker.run)
    metrics = AdapterMetrics()

    def adapter(cc: str, sink: object, conf: Settings = s, **kw: object) -> None:
        a = Adapter(conf, {cc: sink}, metrics=metrics, **kw)  # type: ignore[arg-type]
        runner.start(cc, a.run)

    pg = sa.make_url(new_postgres_db())
    proxy = TcpProxy(pg.host or "127.0.0.1", pg.port or 5432)
    it_url = pg.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
    adapter("FR", SqlSink(f"sqlite:///{tmp_path}/fr.db"))
    adapter(
        "ES", SlowSink(SqlSink(f"sqlite:///{tmp_path}/es.db"), delay=1.0), s.with_(batch_size=1)
    )
    adapter("IT", SqlSink(it_url), s.with_(retry_attempts=2))
    adapter("DE", SqlSink(f"sqlite:///{tmp_path}/de.db"))
    adapter("JP", SqlSink(f"sqlite:///{tmp_path}/jp.db"))  # nothing will be sent to it
    three_hours = timedelta(hours=3)
    adapter("TH", SqlSink(f"sqlite:///{tmp_path}/th.db"), clock=lambda: utcnow() + three_hours)
    # NG never starts an adapter.
    busy = tuple(c for c in ALL if c != "JP")
    engine = tracker.engine

    def report() -> dict[str, CountryReport]:
        return {r.country: r for r in build_report(engine, s)}

    def state() -> object:
        return {c: (r.recorded, r.status.value) for c, r in report().items()}

    with HQ(s) as hq:
        hq.publish([draft(f"2026/{n}", targets=busy) for n in range(1, 6)])
        until(
            lambda: all(
                report().get(c) and report()[c].recorded >= 5 for c in ("FR", "IT", "DE", "TH")
            )
        )
        # DOWN and STALLED are about groups that did commit: wait for those commits (they are
        # asynchronous) before taking DE's adapter away and IT's database.
        until(lambda: committed(s, "DE") == 5 and committed(s, "IT") == 5)
        runner.stop("DE")  # the adapter goes away: nobody left in its group
        proxy.cut()  # IT's database becomes unreachable: its adapter holds, alive but stuck
        for wave in range(3):
            hq.publish(
                [draft(f"2026/{n}", targets=busy) for n in range(10 + wave * 10, 20 + wave * 10)]
            )
            time.sleep(1)
    respond(s, "FR", "2026/1", Answer.NO_TRACE, "searched the border posts")

    def settled() -> bool:
        r = report()
        return (
            r["FR"].outstanding == 0
            and r["TH"].outstanding == 0
            and r["FR"].response_p95_s is not None
            and [r[c].status for c in ("ES", "IT", "DE", "NG")]
            == [Status.LAGGING, Status.STALLED, Status.DOWN, Status.NEVER_CONNECTED]
        )

    until(settled, 60, show=state)
    r = report()
    assert r["FR"].status is Status.OK and r["FR"].p95_lag_s is not None
    assert r["FR"].p95_lag_s < 4 and r["FR"].answered == 1
    assert r["JP"].status is Status.OK and r["JP"].sent == 0  # quiet: no alarm
    assert r["TH"].status is Status.OK
    assert r["TH"].clock_skew_s is not None and abs(r["TH"].clock_skew_s - 10800) < 10
    assert r["TH"].p95_lag_s is not None and r["TH"].p95_lag_s < 4  # skew does not leak in
    assert r["FR"].clock_skew_s is not None and abs(r["FR"].clock_skew_s) < 2
    assert r["ES"].consumer_time_lag_s is not None and r["ES"].consumer_time_lag_s > 4
    assert r["ES"].consumer_lag and r["ES"].consumer_lag > 0
    assert r["IT"].consumer_lag == 30 and r["DE"].consumer_lag == 30
    assert r["NG"].consumer_lag == 35 and r["NG"].outstanding == 35
    order = [x.country for x in build_report(engine, s)]
    assert order.index("NG") < order.index("DE") < order.index("IT") < order.index("ES")
    assert order.index("ES") < order.index("FR")  # worst first

    rows = {row["country"]: row for row in json.loads(to_json(build_report(engine, s)))}
    added = {
        "delivery_p95_s",
        "response_p95_s",
        "consumer_lag",
        "consumer_time_lag_s",
        "clock_skew_s",
    }
    assert REPORT_KEYS | added <= set(rows["FR"])

    # The same figures, scraped as Prometheus metrics from the tracker and from the adapters.
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(ReportCollector(lambda: build_report(engine, s)))
    tracker_server = serve(registry, 0)
    adapter_server = serve(metrics.registry, 0)
    try:
        text = _scrape(tracker_server.server_port)
        assert 'notice_bus_status{country="IT",status="STALLED"} 1.0' in text
        assert 'notice_bus_status{country="JP",status="OK"} 1.0' in text
        assert 'notice_bus_outstanding{country="NG"} 35.0' in text
        assert "notice_bus_consumer_time_lag_seconds" in text
        text = _scrape(adapter_server.server_port)
        assert 'notice_bus_adapter_records_total{country="FR",outcome="recorded"} 35.0' in text
        assert 'notice_bus_adapter_holding{country="IT"} 1.0' in text
    finally:
        tracker_server.shutdown()
        adapter_server.shutdown()
        proxy.close()


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        return str(answer.read().decode())
