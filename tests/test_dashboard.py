"""The live dashboard in a real headless Chromium, driven over the DevTools protocol: it loads
once and refreshes its data in place (the page's own JavaScript state and the viewer's zoom
survive), warns when the tracker stops sampling, and fits a phone's screen.

Chromium speaks the protocol over two pipes (``--remote-debugging-pipe``: it reads commands on
fd 3 and writes answers on fd 4, each a JSON text ended by a NUL), so no WebSocket client is
needed. The scenario is tests/test_report_html.py's, on the real broker.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from notice_bus.reports.dashboard import make_server
from notice_bus.reports.report import build_report
from tests.conftest import Bus
from tests.factories import draft
from tests.test_report_html import scenario


class Chromium:
    """A headless Chromium and one page of it, driven over the DevTools protocol."""

    def __init__(self, tmp_path: Path) -> None:
        exe = shutil.which("chromium")
        if exe is None:
            message = "chromium is not installed: apt-get install -y chromium"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        to_chrome, self._to = os.pipe()
        self._from, from_chrome = os.pipe()
        # Out of the way of fds 3 and 4, which the child gets them as.
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_chrome, from_chrome)]
        os.close(to_chrome)
        os.close(from_chrome)

        def onto_3_and_4() -> None:
            os.dup2(ends[0], 3)
            os.dup2(ends[1], 4)

        profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp_path)
        self._log = (tmp_path / "chromium.log").open("wb")
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
            "--proxy-server=127.0.0.1:9",  # nothing but loopback: the page carries plotly.js
            "--remote-debugging-pipe",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            close_fds=False,  # Python's own fds are close-on-exec; 3 and 4 must stay open
            preexec_fn=onto_3_and_4,
        )
        for fd in ends:
            os.close(fd)
        self._ids = iter(range(1, 1_000_000))
        self._buffer = b""
        self._session: str | None = None

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30) -> Any:
        """The result of one command, to the page once :meth:`open` attached to it."""
        msg_id = next(self._ids)
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if self._session and not method.startswith("Target."):
            msg["sessionId"] = self._session
        os.write(self._to, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                answer = json.loads(raw)
                if answer.get("id") == msg_id:
                    assert "error" not in answer, answer
                    return answer["result"]
            left = deadline - time.monotonic()
            assert left > 0, f"no answer to {method} within {timeout}s"
            ready, _, _ = select.select([self._from], [], [], left)
            if ready:
                chunk = os.read(self._from, 1 << 20)
                assert chunk, "chromium closed its pipe"
                self._buffer += chunk

    def open(self, url: str, width: int = 1280, height: int = 900) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        attached = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        self._session = attached["sessionId"]
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1}
        self.send("Emulation.setDeviceMetricsOverride", {**metrics, "mobile": width < 600})
        self.send("Page.navigate", {"url": url})

    def js(self, expression: str) -> Any:
        """The value of ``expression`` in the page (promises awaited)."""
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30) -> Any:
        """``expression``'s value once truthy."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(expression)
            if value:
                return value
            assert time.monotonic() < deadline, f"never true: {expression}"
            time.sleep(0.2)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to, self._from):
            os.close(fd)
        self._log.close()


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Chromium]:
    browser = Chromium(tmp_path)
    yield browser
    browser.close()


def dashboard(bus: Bus, **kw: Any) -> Iterator[str]:
    """Serve the dashboard over ``bus``'s tracker; yields its base URL."""
    server = make_server(bus.settings, port=0, log_level="warning", **kw)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "dashboard did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


LOADED = "document.readyState === 'complete' && window.noticeBusRefreshes >= 1"
CELL = (
    "Array.from(document.querySelectorAll('#countries tr[data-country=\"{cc}\"] td'))"
    ".map((td) => td.textContent)"
)
ZOOM = "document.getElementById('chart-outstanding').layout.yaxis.range"


@pytest.mark.kafka
def test_the_page_refreshes_its_data_in_place_and_warns_when_the_tracker_stops(
    make_bus: Callable[..., Bus], tmp_path: Path, chromium: Chromium
) -> None:
    bus = scenario(make_bus, tmp_path)
    bus.tracker.sample()  # the tracker's heartbeat: fresh
    for base in dashboard(bus, refresh_s=1, stale_after_s=6):
        chromium.open(f"{base}/")
        chromium.wait_for(LOADED)
        assert chromium.js("document.getElementById('stale').hidden") is True
        assert chromium.js(CELL.format(cc="TH"))[2] == "3"  # sent
        # State a reload would lose: a marker, and a zoom of the viewer's.
        chromium.js("window.marker = 'still here'")
        chromium.js("Plotly.relayout('chart-outstanding', {'yaxis.range': [0.5, 7]}).then(() => 1)")

        # The tracker sees a new notice; the page shows it by itself.
        bus.hq.publish([draft("2026/4")])
        bus.pump(
            lambda: (
                {r.country: r.sent for r in build_report(bus.tracker.engine, bus.settings)}["TH"]
                == 4
            )
        )
        bus.tracker.sample()
        chromium.wait_for(f"{CELL.format(cc='TH')}[2] === '4'")
        assert chromium.js("window.marker") == "still here"
        assert chromium.js(ZOOM) == [0.5, 7]
        assert chromium.js("performance.getEntriesByType('navigation').length") == 1
        refreshes = chromium.js("window.noticeBusRefreshes")
        assert refreshes >= 2

        # No sample for stale_after_s: the banner appears, without a reload either.
        banner = chromium.wait_for(
            "!document.getElementById('stale').hidden"
            " && document.getElementById('stale').textContent",
            timeout=20,
        )
        assert "tracker's last sample is" in banner and "is it running?" in banner
        assert chromium.js("window.marker") == "still here"
        assert chromium.js(ZOOM) == [0.5, 7]


@pytest.mark.kafka
def test_the_page_fits_a_narrow_screen(
    make_bus: Callable[..., Bus], tmp_path: Path, chromium: Chromium
) -> None:
    bus = scenario(make_bus, tmp_path)
    for base in dashboard(bus, refresh_s=1):
        chromium.open(f"{base}/", width=390, height=844)
        chromium.wait_for(LOADED)
        sizes = chromium.js(
            "({page: document.documentElement.scrollWidth, view: window.innerWidth,"
            " box: document.querySelector('.table-box').clientWidth,"
            " table: document.getElementById('countries').scrollWidth,"
            " chart: document.getElementById('chart-lag').getBoundingClientRect().right})"
        )
        assert sizes["view"] == 390
        assert sizes["page"] <= sizes["view"], sizes  # nothing sticks out of the screen
        assert sizes["chart"] <= sizes["view"], sizes
        assert sizes["table"] > sizes["box"], sizes  # the table scrolls in its own box
