"""The report's pure logic: percentiles, and the status rules on both sides."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from notice_bus.reports.report import classify_acks
from notice_bus.runtime.settings import Settings
from notice_bus.tracker.group_health import Sample, Status, classify
from notice_bus.tracker.measures import percentile

S = Settings(lag_threshold_s=60, down_after_s=120)
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


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
def test_classify_from_acks(kw: dict[str, float | None], status: Status) -> None:
    assert classify_acks(settings=S, **kw) is status  # type: ignore[arg-type]


def window(*points: tuple[int, int | None, int, float | None], step_s: int = 10) -> list[Sample]:
    """(end offset, committed, members, time lag) every ``step_s`` seconds."""
    return [
        Sample(T0 + timedelta(seconds=i * step_s), end, done, members, tl)
        for i, (end, done, members, tl) in enumerate(points)
    ]


@pytest.mark.parametrize(
    ("samples", "status"),
    [
        ([], Status.OK),
        # Quiet: nothing sent for the whole window, offsets never move: no alarm.
        (window((40, 40, 1, None), (40, 40, 1, None), (40, 40, 1, None), step_s=60), Status.OK),
        # Quiet and nobody home, but nothing to do either.
        (window((40, 40, 0, None), (40, 40, 0, None)), Status.OK),
        (window((10, None, 0, 30.0), (20, None, 0, 40.0)), Status.NEVER_CONNECTED),
        (window((10, 5, 1, 3.0), (20, 5, 0, 13.0)), Status.DOWN),
        # Members there, work waiting, offsets frozen for over a minute: stalled.
        (window((10, 5, 1, 5.0), (12, 5, 1, 35.0), (14, 5, 1, 65.0), step_s=40), Status.STALLED),
        # Moving, but the oldest waiting notice is over the threshold: lagging.
        (window((100, 10, 1, 20.0), (120, 30, 1, 70.0)), Status.LAGGING),
        # Moving, young, but the lag grows at every one of the last five samples: lagging.
        (
            window(
                (10, 5, 1, 2.0),
                (20, 8, 1, 3.0),
                (30, 11, 1, 4.0),
                (40, 14, 1, 4.0),
                (50, 17, 1, 4.0),
            ),
            Status.LAGGING,
        ),
        # Idle for long (lag 0, offsets still), then work arrives: not a stall.
        (
            window(
                (40, 40, 1, None), (40, 40, 1, None), (40, 40, 1, None), (45, 40, 1, 2.0), step_s=60
            ),
            Status.OK,
        ),
        # Work waiting and offsets still for 60 s after having moved: stalled.
        (
            window((10, 2, 1, 1.0), (20, 9, 1, 1.0), (25, 9, 1, 30.0), (30, 9, 1, 61.0), step_s=30),
            Status.STALLED,
        ),
        # Moving, young, lag steady: fine.
        (window((10, 5, 1, 2.0), (20, 16, 1, 1.0), (30, 25, 1, 2.0)), Status.OK),
    ],
)
def test_classify_from_the_consumer_side(samples: list[Sample], status: Status) -> None:
    assert classify(samples, lag_threshold_s=60, stall_after_s=60) is status


@pytest.mark.parametrize(
    ("kw", "status"),
    [
        # Only REJECTED so far (no time of it kept): heard from, so never NEVER_CONNECTED.
        (
            {"sent": 3, "outstanding": 1, "p95": None, "oldest": 90, "last_seen": None},
            Status.LAGGING,
        ),
        ({"sent": 3, "outstanding": 1, "p95": None, "oldest": 5, "last_seen": None}, Status.OK),
    ],
)
def test_a_country_that_only_rejected_has_acknowledged(
    kw: dict[str, float | None], status: Status
) -> None:
    assert classify_acks(settings=S, rejected=2, **kw) is status  # type: ignore[arg-type]


def test_the_policy_deadline_tightens_the_threshold() -> None:
    kw = {"sent": 3, "outstanding": 1, "p95": 1.0, "oldest": 30.0, "last_seen": 5.0}
    assert classify_acks(settings=S, **kw) is Status.OK  # type: ignore[arg-type]
    assert classify_acks(settings=S, threshold_s=20.0, **kw) is Status.LAGGING  # type: ignore[arg-type]


NOBODY = window((10, None, 0, 30.0), (12, None, 0, 40.0))  # a group that never committed
LEFT = window((10, 10, 0, None), (10, 10, 0, None))  # caught up, then nobody in the group
CAUGHT_UP = window((10, 10, 1, None), (10, 10, 1, None))  # someone there, nothing to do
GONE = window((10, 5, 1, 3.0), (20, 5, 0, 13.0))  # committed, then left with work waiting
STUCK = window((10, 5, 1, 5.0), (12, 5, 1, 35.0), (14, 5, 1, 65.0), step_s=40)
SLOW = window((100, 10, 1, 20.0), (120, 30, 1, 70.0))


@pytest.mark.parametrize(
    ("by_acks", "samples", "status"),
    [
        # No group evidence: the acknowledgements alone.
        *((s, [], s) for s in Status),
        # A bureau in another language, a hub or a replay without the group, acknowledging.
        (Status.OK, NOBODY, Status.OK),
        (Status.LAGGING, NOBODY, Status.LAGGING),
        (Status.DOWN, NOBODY, Status.DOWN),
        # Neither side has ever heard of it.
        (Status.NEVER_CONNECTED, NOBODY, Status.NEVER_CONNECTED),
        # Everything acknowledged in time: OK whatever the group (one it left, say).
        (Status.OK, GONE, Status.OK),
        (Status.OK, STUCK, Status.OK),
        (Status.OK, SLOW, Status.OK),
        # Notices waiting too long are never OK, whatever the group says; someone in the group
        # means it is not down, however silent its acknowledgements.
        (Status.LAGGING, CAUGHT_UP, Status.LAGGING),
        (Status.DOWN, CAUGHT_UP, Status.LAGGING),
        (Status.NEVER_CONNECTED, CAUGHT_UP, Status.LAGGING),
        (Status.DOWN, LEFT, Status.DOWN),
        (Status.LAGGING, LEFT, Status.LAGGING),
        (Status.NEVER_CONNECTED, LEFT, Status.DOWN),  # the group did commit: it connected
        # The group refines what is wrong.
        (Status.DOWN, STUCK, Status.STALLED),
        (Status.LAGGING, STUCK, Status.STALLED),
        (Status.LAGGING, GONE, Status.DOWN),
        (Status.NEVER_CONNECTED, GONE, Status.DOWN),
        (Status.LAGGING, SLOW, Status.LAGGING),
        (Status.DOWN, SLOW, Status.LAGGING),
    ],
)
def test_acknowledgements_first_the_group_refines(
    by_acks: Status, samples: list[Sample], status: Status
) -> None:
    from notice_bus.reports.report import country_status

    got = country_status(by_acks, samples, lag_threshold_s=60, stall_after_s=60)
    assert got is status
