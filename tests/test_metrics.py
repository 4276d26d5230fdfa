"""The Prometheus endpoints of the tracker and of an adapter, scraped over HTTP on the real
broker and checked by ``promtool`` (Debian's prometheus package, scripts/system-deps.sh
promtool), and the example alert rules of deploy/prometheus."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from notice_bus.bureau.metrics import AdapterMetrics
from notice_bus.reports.metrics import tracker_registry
from notice_bus.reports.report import build_report
from notice_bus.runtime.prometheus import serve
from tests.conftest import Bus
from tests.test_report_html import scenario

ALERTS = Path(__file__).parent.parent / "deploy" / "prometheus" / "alerts.yml"


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        message = "promtool is not installed: bash scripts/system-deps.sh promtool"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return subprocess.run(
        [exe, *args], input=stdin, capture_output=True, encoding="utf-8", timeout=60
    )


def scrape(registry: Any) -> Iterator[str]:
    """Serve ``registry`` on a free port as the commands do; yields one scrape's text."""
    server = serve(registry, 0)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as r:
            yield r.read().decode("utf-8")
    finally:
        server.shutdown()
        server.server_close()


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(family: Any, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples if s.name == name}


@pytest.mark.kafka
def test_both_endpoints_pass_promtool_with_conventional_names(
    make_bus: Callable[..., Bus], tmp_path: Path
) -> None:
    adapter_metrics = AdapterMetrics()
    bus = make_bus(["FR", "TH"])

    def adapter_with_metrics(country: str, url: str) -> Any:
        return Bus.adapter(bus, country, url, metrics=adapter_metrics)

    bus.adapter = adapter_with_metrics  # type: ignore[method-assign]
    scenario(lambda _countries: bus, tmp_path)  # FR records 4 events, TH never connects
    # The adapter counts a batch once its offsets are committed, a step or so later.
    fr_recorded = {"country": "FR", "outcome": "recorded"}
    bus.pump(
        lambda: (
            adapter_metrics.registry.get_sample_value(
                "notice_bus_adapter_records_total", fr_recorded
            )
            == 4
        )
    )
    before = time.time()
    bus.tracker.sample()
    engine, settings = bus.tracker.engine, bus.settings

    for text in scrape(tracker_registry(engine, lambda: build_report(engine, settings))):
        checked = promtool("check", "metrics", stdin=text)
        assert checked.returncode == 0 and not checked.stdout.strip(), checked
        tracker = families(text)
    for text in scrape(adapter_metrics.registry):
        checked = promtool("check", "metrics", stdin=text)
        assert checked.returncode == 0 and not checked.stdout.strip(), checked
        adapter = families(text)

    # Cumulative counts are counters (notice_bus_sent_total), the rest gauges with units.
    for name in ("notice_bus_sent", "notice_bus_recorded", "notice_bus_rejected"):
        assert tracker[name].type == "counter"
    fr, th = (("country", "FR"),), (("country", "TH"),)
    assert samples(tracker["notice_bus_sent"], "notice_bus_sent_total") == {fr: 4.0, th: 3.0}
    assert tracker["notice_bus_consumer_lag_messages"].type == "gauge"
    assert "notice_bus_consumer_lag" not in tracker
    # The oldest waiting notice's age: TH's three, none at FR.
    oldest = samples(
        tracker["notice_bus_oldest_waiting_seconds"], "notice_bus_oldest_waiting_seconds"
    )
    assert oldest[fr] == 0.0 and oldest[th] > 0.0

    # Lags are histograms, not precomputed p95 gauges.
    assert "notice_bus_apply_lag_p95_seconds" not in tracker
    apply = tracker["notice_bus_apply_lag_seconds"]
    assert apply.type == "histogram"
    counts = samples(apply, "notice_bus_apply_lag_seconds_count")
    assert counts == {fr: 4.0}  # TH recorded nothing
    buckets = [
        (float(s.labels["le"]), s.value)
        for s in apply.samples
        if s.name.endswith("_bucket") and s.labels["country"] == "FR"
    ]
    assert [v for _le, v in buckets] == sorted(v for _le, v in buckets)  # cumulative
    assert buckets[-1] == (float("inf"), 4.0)
    assert tracker["notice_bus_delivery_lag_seconds"].type == "histogram"
    assert tracker["notice_bus_response_lag_seconds"].type == "histogram"

    # The tracker's heartbeat: when it last sampled.
    [beat] = tracker["notice_bus_tracker_last_sample_timestamp_seconds"].samples
    assert before - 1 <= beat.value <= time.time() + 1

    assert adapter["notice_bus_adapter_records"].type == "counter"
    recorded = samples(adapter["notice_bus_adapter_records"], "notice_bus_adapter_records_total")
    assert recorded[(("country", "FR"), ("outcome", "recorded"))] == 4.0


def test_example_alert_rules_are_valid_and_fire(tmp_path: Path) -> None:
    checked = promtool("check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 10 rules found" in checked.stdout
    # The tracker's heartbeat stops at 60 s; a notice waits at TH past the record deadline.
    tests = tmp_path / "alerts_test.yml"
    tests.write_text(
        f"""
rule_files: [{ALERTS}]
evaluation_interval: 30s
tests:
  - interval: 30s
    input_series:
      - series: notice_bus_tracker_last_sample_timestamp_seconds
        values: 0 30 60 60 60 60 60 60 60 60 60 60 60 60
      - series: notice_bus_oldest_waiting_seconds{{country="TH"}}
        values: 700+30x30
      - series: notice_bus_oldest_waiting_seconds{{country="FR"}}
        values: 0x30
      - series: notice_bus_security_events_total{{country="ES"}}
        values: 0x10 2x20
    alert_rule_test:
      - eval_time: 2m
        alertname: NoticeBusTrackerNotSampling
        exp_alerts: []
      - eval_time: 5m
        alertname: NoticeBusTrackerNotSampling
        exp_alerts:
          - exp_labels: {{severity: page}}
            exp_annotations:
              summary: "The notice-bus tracker has not sampled for 4m 0s"
              description: "Is the tracker running and reaching the broker? Statuses are old."
      - eval_time: 10m
        alertname: NoticeBusNoticeWaiting
        exp_alerts:
          - exp_labels: {{severity: page, country: TH}}
            exp_annotations:
              summary: "TH has a notice waiting for 21m 40s"
              description: "Past the record deadline (record_within_s)."
      - eval_time: 4m
        alertname: NoticeBusSecurityEvent
        exp_alerts: []
      - eval_time: 6m
        alertname: NoticeBusSecurityEvent
        exp_alerts:
          - exp_labels: {{severity: page, country: ES}}
            exp_annotations:
              summary: "ES: 2 acknowledgements or answers failed their MAC"
              description: "See the report's SECURITY column and the tracker_security_event table."
""",
        encoding="utf-8",
    )
    tested = promtool("test", "rules", str(tests))
    assert tested.returncode == 0, tested.stdout + tested.stderr
