"""The report's pure logic: percentiles and status rules."""

from __future__ import annotations

import pytest

from notice_bus.report import Status, classify, percentile
from notice_bus.settings import Settings

S = Settings(lag_threshold_s=60, down_after_s=120)


def test_percentile_interpolates() -> None:
    assert percentile([], 50) is None
    assert percentile([4.0], 95) == 4.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile(list(map(float, range(101))), 95) == pytest.approx(95.0)


@pytest.mark.parametrize(
    ("kw", "status"),
    [
        ({"sent": 0, "outstanding": 0, "p95": None, "oldest": None, "last_seen": None}, Status.OK),
        (
            {"sent": 5, "outstanding": 5, "p95": None, "oldest": 10, "last_seen": None},
            Status.NEVER_CONNECTED,
        ),
        ({"sent": 5, "outstanding": 2, "p95": 1, "oldest": 300, "last_seen": 300}, Status.DOWN),
        ({"sent": 5, "outstanding": 2, "p95": 1, "oldest": 90, "last_seen": 5}, Status.LAGGING),
        ({"sent": 5, "outstanding": 0, "p95": 75, "oldest": None, "last_seen": 5}, Status.LAGGING),
        # Silent for long but with nothing to do: not down.
        ({"sent": 5, "outstanding": 0, "p95": 1, "oldest": None, "last_seen": 9999}, Status.OK),
    ],
)
def test_classify(kw: dict[str, float | None], status: Status) -> None:
    assert classify(settings=S, **kw) is status  # type: ignore[arg-type]
