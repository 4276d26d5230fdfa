"""``make demo``'s job, smaller: a secured local broker, every part its own principal, the
report at the end. It starts its own broker, as the demo does."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from notice_bus.cli.demo import ABSENT, COUNTRIES, SLOW, run_demo
from notice_bus.runtime.settings import Settings

pytestmark = pytest.mark.kafka


def test_the_demo_runs_secured_and_every_healthy_country_takes_everything_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.chdir(tmp_path)  # .notice-bus/ (databases, credentials) goes here
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    assert run_demo(Settings(), notices=30) == 0
    out = capsys.readouterr().out
    assert "credentials in .notice-bus/pki/" in out
    assert (tmp_path / ".notice-bus" / "pki" / "bureau-FR" / "client.crt").is_file()
    assert "(SSL)" in out  # every client over mutual TLS
    assert "an unknown user is refused in" in out
    for cc in COUNTRIES:
        if cc in (SLOW, ABSENT):
            continue
        assert f"{cc}: " in out and f"{cc}.db (ok)" in out, cc
    assert f"{ABSENT}: no local database" in out
    assert "WARNING" not in out
    # The bureaus' requests: the clean ones published at once, the political one held.
    assert out.count(": APPROVED by policy:auto_publish_clean") == 3
    assert "TH asked for 2026/90004: HELD, held for a reviewer: A3-HEAD-OF-STATE" in out
    assert "1 (" in out and "A3-HEAD-OF-STATE)" in out  # the report's REQ WAIT for TH
    # France's damaged copy: found by HQ's manifest, mended, then verified; Germany's verified.
    assert "DE: copy check (report): VERIFIED" in out
    assert "FR: copy check (mend): DRIFT" in out and "1 missing, 1 resurrected; 2 mended" in out
    assert "FR: copy check (report): VERIFIED" in out
    fr = next(line for line in out.splitlines() if line.startswith("FR "))
    assert re.search(r" ok \d+", fr), fr  # the report's COPY column: verified, so long ago
