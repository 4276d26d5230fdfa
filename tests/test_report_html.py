"""The HTML report and the live dashboard, drawn by a real headless Chromium.

The scenario runs on the real broker: FR's adapter records everything, TH never connects.
Chromium runs with every network fetch sent to a dead proxy, so a page that needed anything
but itself (a CDN's plotly.js) would show no charts.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from plotly.offline import get_plotlyjs
from sqlalchemy import insert

from notice_bus.reports.charts import outstanding_series
from notice_bus.reports.dashboard import make_server
from notice_bus.reports.html import render_html
from notice_bus.reports.report import CountryReport, Status, build_report
from notice_bus.runtime.db import make_engine
from notice_bus.runtime.settings import Settings
from notice_bus.tracker.tables import GROUP_SAMPLE, SENT, TRACKER_TABLES
from tests.conftest import Bus
from tests.factories import draft

CHARTS = ("chart-lag", "chart-outstanding", "chart-matrix")
NOTICES = ("2026/1", "2026/2", "2026/3")
EXPECTED_ROWS = [("TH", "NEVER_CONNECTED"), ("FR", "OK")]  # worst first


# --- the scenario ------------------------------------------------------------------------------


def scenario(make_bus: Callable[..., Bus], tmp_path: Path) -> Bus:
    """2026/1 (updated to v2) and 2026/2 to both countries, 2026/3 to FR only."""
    bus = make_bus(["FR", "TH"])
    bus.adapter("FR", f"sqlite:///{tmp_path}/fr.db")  # TH never connects
    bus.hq.publish([draft("2026/1"), draft("2026/2"), draft("2026/3", targets=("FR",))])
    bus.hq.publish([draft("2026/1", name="Petrov")])

    def settled() -> bool:
        rows = {r.country: r for r in build_report(bus.tracker.engine, bus.settings)}
        return (
            bus.tracker.step() == 0
            and rows.keys() == {"FR", "TH"}
            and (rows["FR"].recorded, rows["TH"].sent) == (4, 3)
        )

    bus.pump(settled)
    return bus


def render(bus: Bus, **kw: Any) -> str:
    return render_html(
        bus.tracker.engine, bus.settings, build_report(bus.tracker.engine, bus.settings), **kw
    )


def plot_data(page: str, div_id: str) -> list[dict[str, Any]]:
    """The traces plotly is asked to draw into ``div_id``."""
    m = re.search(rf'Plotly\.newPlot\(\s*"{div_id}",\s*', page)
    assert m, f"no plot for {div_id}"
    traces, _end = json.JSONDecoder().raw_decode(page, m.end())
    return list(traces)


# --- the rendered DOM --------------------------------------------------------------------------


class Dom(HTMLParser):
    """Per element with an id: the classes and texts of the elements inside it; and the
    countries table's rows as (country, status)."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.classes: dict[str, Counter[str]] = defaultdict(Counter)
        self.texts: dict[str, set[str]] = defaultdict(set)
        self.rows: list[tuple[str | None, str | None]] = []
        self._open: list[tuple[str, str | None]] = []
        self.feed(text)
        self.close()

    def _owners(self) -> list[str]:
        return [i for _tag, i in self._open if i]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for owner in self._owners():
            self.classes[owner].update((a.get("class") or "").split())
        if tag == "tr" and "data-country" in a:
            self.rows.append((a["data-country"], a.get("data-status")))
        if tag not in self.VOID:
            self._open.append((tag, a.get("id")))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i][0] == tag:
                del self._open[i:]
                return

    def handle_data(self, data: str) -> None:
        if data.strip():
            for owner in self._owners():
                self.texts[owner].add(data.strip())


def chromium_dom(url: str, tmp_path: Path) -> str:
    """The DOM of ``url`` after Chromium has run its scripts."""
    exe = shutil.which("chromium")
    if exe is None:
        message = "chromium is not installed: apt-get install -y chromium"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp_path)
    command = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        # Every fetch but loopback goes to a port where nothing listens: the page must
        # draw with what it carries.
        "--proxy-server=127.0.0.1:9",
        "--virtual-time-budget=10000",
        "--dump-dom",
        url,
    ]
    done = subprocess.run(command, capture_output=True, encoding="utf-8", timeout=90)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "</html>" in done.stdout, done.stderr[-3000:]
    return done.stdout


def assert_drawn(dom_text: str) -> None:
    """plotly.js drew all three charts, with the scenario's countries and notices, and the
    table lists the countries worst first."""
    dom = Dom(dom_text)
    assert dom.rows == EXPECTED_ROWS
    for chart in CHARTS:
        assert dom.classes[chart]["main-svg"] >= 1, f"{chart} was not drawn"
    assert dom.classes["chart-lag"]["bars"] == 3  # p50, p95, delivery p95
    assert {"apply p50", "apply p95", "delivery p95", "FR", "TH"} <= dom.texts["chart-lag"]
    assert dom.classes["chart-outstanding"]["js-line"] >= 1
    assert {"FR", "TH"} <= dom.texts["chart-outstanding"]
    assert dom.classes["chart-matrix"]["hm"] == 1  # the heatmap's image
    # Rows labelled by notice, columns by country, colour bar by state.
    assert {*NOTICES, "FR", "TH", "RECORDED", "OUTSTANDING"} <= dom.texts["chart-matrix"]
    assert 'data-title="Share chart' not in dom_text  # no button uploads the notices


# --- the tests ---------------------------------------------------------------------------------


@pytest.mark.kafka
def test_report_page_is_one_self_contained_document(
    make_bus: Callable[..., Bus], tmp_path: Path
) -> None:
    bus = scenario(make_bus, tmp_path)
    page = render(bus)
    js = get_plotlyjs()
    assert page.count(js) == 1  # plotly.js inlined, once
    rest = page.replace(js, "")
    assert not re.search(r"<script[^>]*\bsrc\s*=", rest, re.I)
    assert not re.search(r"<link\b", rest, re.I)
    assert "http://" not in rest and "https://" not in rest
    assert '<meta charset="utf-8">' in rest
    assert 'http-equiv="refresh"' not in rest
    assert Dom(rest).rows == EXPECTED_ROWS
    assert '<td class="status status-never-connected">NEVER_CONNECTED</td>' in rest
    assert '<td class="status status-ok">OK</td>' in rest

    lag = {t["name"]: dict(zip(t["x"], t["y"], strict=True)) for t in plot_data(rest, "chart-lag")}
    assert lag["apply p95"]["FR"] is not None and lag["apply p95"]["TH"] is None
    assert lag["delivery p95"]["FR"] is not None

    outstanding = {t["name"]: t["y"] for t in plot_data(rest, "chart-outstanding")}
    assert len(outstanding["TH"]) == 30
    assert outstanding["TH"][-1] == 3 and outstanding["FR"][-1] == 0
    assert outstanding["TH"] == sorted(outstanding["TH"])  # nothing of TH's is ever settled

    [matrix] = plot_data(rest, "chart-matrix")
    assert matrix["x"] == ["TH", "FR"] and set(matrix["y"]) == set(NOTICES)
    assert matrix["y"][0] == "2026/1"  # its update was the last sent
    cells = {
        (n, c): (z, text)
        for n, zs, texts in zip(matrix["y"], matrix["z"], matrix["text"], strict=True)
        for c, z, text in zip(matrix["x"], zs, texts, strict=True)
    }
    states = matrix["colorbar"]["ticktext"]
    assert {k: states[z] for k, (z, _t) in cells.items()} == {
        **{(n, "FR"): "RECORDED" for n in NOTICES},
        ("2026/1", "TH"): "OUTSTANDING",
        ("2026/2", "TH"): "OUTSTANDING",
        ("2026/3", "TH"): "not sent",
    }
    assert cells[("2026/1", "FR")][1] == "2026/1 in FR: RECORDED (v2)"


@pytest.mark.kafka
def test_report_page_draws_in_chromium(make_bus: Callable[..., Bus], tmp_path: Path) -> None:
    bus = scenario(make_bus, tmp_path)
    path = tmp_path / "report.html"
    path.write_text(render(bus), encoding="utf-8")
    assert_drawn(chromium_dom(path.as_uri(), tmp_path))


@pytest.mark.kafka
def test_dashboard_serves_the_live_report(make_bus: Callable[..., Bus], tmp_path: Path) -> None:
    bus = scenario(make_bus, tmp_path)
    # A refresh longer than Chromium's virtual-time budget, so the dump is of this page.
    server = make_server(bus.settings, port=0, refresh_s=300, log_level="warning")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "dashboard did not start"
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/healthz", timeout=10) as r:
            assert r.read() == b"ok"
        with urllib.request.urlopen(f"{base}/report.json", timeout=10) as r:
            assert r.headers.get_content_type() == "application/json"
            rows = json.loads(r.read())
        assert [(x["country"], x["status"]) for x in rows] == EXPECTED_ROWS
        assert {x["country"]: x["recorded"] for x in rows} == {"FR": 4, "TH": 0}
        with urllib.request.urlopen(f"{base}/", timeout=30) as r:
            assert r.headers.get_content_type() == "text/html"
            page = r.read().decode("utf-8")
        # Loaded once, then refreshed from its data (tests/test_dashboard.py): never reloaded.
        assert 'http-equiv="refresh"' not in page and '"dashboard.json"' in page
        assert_drawn(chromium_dom(f"{base}/", tmp_path))
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert not thread.is_alive(), "dashboard did not stop"


# --- without a broker --------------------------------------------------------------------------


def test_outstanding_is_counted_per_bucket() -> None:
    t0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    at = [t0 + timedelta(seconds=s) for s in range(0, 25, 5)]
    sent = [("FR", "2026/1", 1, at[0]), ("FR", "2026/2", 1, at[2]), ("TH", "2026/1", 1, at[1])]
    done = {
        ("FR", "2026/1", 1): at[1],  # settled at the next bucket
        ("TH", "2026/1", 1): at[0],  # an ack stamped before its notice settles on arrival
    }
    times, series = outstanding_series(sent, done, ["FR", "TH", "DE"], at[4], 3600, buckets=5)
    assert times == at
    assert series == {"FR": [1, 0, 1, 1, 1], "TH": [0, 0, 0, 0, 0], "DE": [0] * 5}
    # Capped: the span starts at most span_cap_s before now.
    times, series = outstanding_series(sent, done, ["FR"], at[4], 10, buckets=3)
    assert times == [at[2], at[3], at[4]] and series == {"FR": [1, 1, 1]}
    assert outstanding_series([], {}, ["FR"], at[4], 10) == ([], {})


def test_text_from_the_data_is_escaped(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/tracker.db", TRACKER_TABLES)
    report = CountryReport('<i>"X', 1, 0, 0, 1, None, None, None, 5.0, Status.DOWN)
    page = render_html(engine, Settings(), [report]).replace(get_plotlyjs(), "")
    assert '<tr data-country="&lt;i&gt;&quot;X" data-status="DOWN">' in page
    assert '<td class="status status-down">DOWN</td>' in page
    assert "<i>" not in page


# --- issue 13: stale banner, colours, "no data", no -0.0 (without a broker) -------------------

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
TWELVE = ("AR", "BR", "DE", "ES", "FR", "ID", "IN", "IT", "JP", "NG", "TH", "US")


def tracker_db(tmp_path: Path, *, sampled: datetime | None, waiting: tuple[str, ...] = ()) -> Any:
    """A tracker database with one notice outstanding per country of ``waiting``, and the
    tracker's last sample at ``sampled``."""
    engine = make_engine(f"sqlite:///{tmp_path}/tracker.db", TRACKER_TABLES)
    with engine.begin() as conn:
        for i, cc in enumerate(waiting):
            at = NOW - timedelta(minutes=10 - i % 5)
            row = {"country": cc, "notice_id": "2026/1", "version": 1, "action": "PUBLISH"}
            conn.execute(insert(SENT), [{**row, "published_at": at, "broker_at": at}])
        if sampled is not None:
            sample = {"country": "FR", "at": sampled, "end_offset": 1, "members": 1}
            conn.execute(insert(GROUP_SAMPLE), [sample])
    return engine


def stale_banner(dom_text: str) -> str | None:
    """The stale banner's text, None when it is hidden (or absent)."""
    m = re.search(r'<div id="stale"([^>]*)>([^<]*)</div>', dom_text)
    assert m, "no stale banner element"
    return None if "hidden" in m.group(1) else html.unescape(m.group(2))


def test_stale_banner_shows_in_chromium_when_the_tracker_stopped_sampling(
    tmp_path: Path,
) -> None:
    engine = tracker_db(tmp_path, sampled=NOW - timedelta(hours=1, minutes=2))
    report = CountryReport("FR", 1, 1, 0, 0, 0.5, 0.9, 1.0, None, Status.OK)
    path = tmp_path / "report.html"
    path.write_text(render_html(engine, Settings(), [report], clock=lambda: NOW), "utf-8")
    banner = stale_banner(chromium_dom(path.as_uri(), tmp_path))
    assert banner is not None
    assert "last sample is 1h02m old (2026-11-23 06:58:00 UTC)" in banner
    # Sampled within the threshold (default 30 s with 10 s sampling): no banner.
    then = NOW - timedelta(hours=1, minutes=1, seconds=50)
    fresh = render_html(engine, Settings(), [report], clock=lambda: then)
    assert stale_banner(fresh) is None
    # The threshold is a parameter, and never sampled is stale too.
    later = render_html(engine, Settings(), [report], clock=lambda: NOW, stale_after_s=7200)
    assert stale_banner(later) is None
    (tmp_path / "never").mkdir()
    never = render_html(tracker_db(tmp_path / "never", sampled=None), Settings(), [report])
    assert "has not sampled" in (stale_banner(never) or "")


def test_twelve_countries_get_twelve_distinct_colours_in_chromium(tmp_path: Path) -> None:
    engine = tracker_db(tmp_path, sampled=NOW, waiting=TWELVE)
    reports = [
        CountryReport(cc, 1, 0, 0, 1, None, None, None, 600.0, Status.NEVER_CONNECTED)
        for cc in TWELVE
    ]
    path = tmp_path / "report.html"
    path.write_text(render_html(engine, Settings(), reports, clock=lambda: NOW), "utf-8")
    dom = chromium_dom(path.as_uri(), tmp_path)
    chart = dom[dom.index('id="chart-outstanding"') : dom.index('id="chart-matrix"')]
    # Each country's line, and its legend's sample.
    strokes = re.findall(r'class="js-line"[^>]*?stroke: (rgb\([^)]*\))', chart)
    assert len(strokes) == 24, strokes
    rgb = sorted({tuple(int(v) for v in re.findall(r"\d+", s)) for s in strokes})
    assert len(rgb) == 12, f"colours repeat: {strokes}"  # NG and TH included
    closest = min(
        sum((a - b) ** 2 for a, b in zip(p, q, strict=True)) ** 0.5
        for i, p in enumerate(rgb)
        for q in rgb[i + 1 :]
    )
    assert closest > 40, f"two colours are {closest:.0f} apart: {strokes}"


def test_no_minus_zero_and_no_data_is_labelled(tmp_path: Path) -> None:
    engine = tracker_db(tmp_path, sampled=NOW)
    reports = [
        CountryReport("FR", 2, 2, 0, 0, 0.01, 0.04, -0.0, None, Status.OK, clock_skew_s=-0.04),
        CountryReport("TH", 1, 0, 0, 1, None, None, None, 5.0, Status.NEVER_CONNECTED),
    ]
    page = render_html(engine, Settings(), reports, clock=lambda: NOW).replace(get_plotlyjs(), "")
    assert "-0.0" not in page
    fr = re.search(r'<tr data-country="FR".*?</tr>', page)
    assert fr and fr.group(0).count("<td>0.0</td>") == 4  # p50, p95, max, skew
    notes = [a["text"] for a in plot_layout(page, "chart-lag").get("annotations", [])]
    assert notes == ["no data"]  # TH, which acknowledged nothing
    [note] = plot_layout(page, "chart-lag")["annotations"]
    assert note["x"] == "TH"


def plot_layout(page: str, div_id: str) -> dict[str, Any]:
    """The layout plotly is asked to draw ``div_id`` with."""
    m = re.search(rf'Plotly\.newPlot\(\s*"{div_id}",\s*', page)
    assert m, f"no plot for {div_id}"
    decoder = json.JSONDecoder()
    _traces, end = decoder.raw_decode(page, m.end())
    layout, _end = decoder.raw_decode(page, page.index("{", end))
    return dict(layout)
