"""Health from the consumer side, independent of acknowledgements (as Burrow does it).

An adapter that is down sends no acknowledgements at all, so silence alone says little. The
tracker therefore looks at each country's consumer group from the broker every few seconds:
how far its committed offsets are behind the end of the country's topic (offset lag), how old
the oldest notice it has not consumed is (time lag, read from the tracker's own record of when
each offset arrived: no interpolation, so no NaN on quiet topics and no wild values on
replays), and whether anyone is in the group. A status comes from a window of such samples.

That status is the group's view only: a bureau need not consume in ``notice-bus.CC`` at all.
The report (:func:`notice_bus.reports.report.country_status`) lets acknowledgements decide whether a
country is OK, and uses this view to say what is wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from itertools import pairwise
from typing import Any

from kafka.admin import OffsetSpec
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from notice_bus.errors import BrokerUnavailable
from notice_bus.runtime.kafka import admin_client, explain
from notice_bus.runtime.settings import Settings
from notice_bus.wire.topics import TopicNames

log = logging.getLogger("notice_bus.group_health")
_GROWTH_SAMPLES = 5


class Status(StrEnum):
    """A country's health; declared worst first, the order in which reports list them.
    SECURITY is the report's, never the group's: acknowledgements or answers of the country
    failed their MAC (:func:`security_status`). COPY_DRIFT is the report's too: the country's
    latest copy check found differences with HQ's records that are still there
    (:func:`copy_status`); it outranks OK only."""

    NEVER_CONNECTED = "NEVER_CONNECTED"
    DOWN = "DOWN"
    STALLED = "STALLED"
    SECURITY = "SECURITY"
    LAGGING = "LAGGING"
    COPY_DRIFT = "COPY_DRIFT"
    OK = "OK"


def security_status(status: Status, security_events: int) -> Status:
    """SECURITY for a country with security events, unless ``status`` is worse (DOWN,
    STALLED, NEVER_CONNECTED: to be seen first)."""
    below = list(Status).index(status) > list(Status).index(Status.SECURITY)
    return Status.SECURITY if security_events and below else status


def copy_status(status: Status, drifting: bool) -> Status:
    """COPY_DRIFT for a country whose latest copy check found differences not mended, unless
    ``status`` is anything but OK (every other status is worse: to be seen first). A copy that
    cannot be verified (UNVERIFIABLE) is shown, but does not make COPY_DRIFT."""
    below = list(Status).index(status) > list(Status).index(Status.COPY_DRIFT)
    return Status.COPY_DRIFT if drifting and below else status


@dataclass(frozen=True, slots=True)
class Sample:
    """One look at a country's group. ``committed`` is None if it never committed."""

    at: datetime
    end_offset: int
    committed: int | None
    members: int
    time_lag_s: float | None = None

    @property
    def lag(self) -> int:
        return self.end_offset - (self.committed or 0)


def classify(samples: Sequence[Sample], *, lag_threshold_s: float, stall_after_s: float) -> Status:
    """The status over a window of samples, oldest first.

    - nothing left to consume (a quiet country included) is OK, whatever else holds;
    - work waiting and nobody in the group: NEVER_CONNECTED if the group never committed,
      else DOWN;
    - members present, work waiting, and the committed offsets still for ``stall_after_s``:
      STALLED;
    - the oldest waiting notice older than ``lag_threshold_s``, or the lag growing at each of
      the last five samples: LAGGING.
    """
    if not samples:
        return Status.OK
    last = samples[-1]
    if last.lag <= 0:
        return Status.OK
    if last.members == 0:
        return Status.NEVER_CONNECTED if last.committed is None else Status.DOWN
    # How long the committed offset has stood still *with work waiting*: an idle stretch
    # before the work arrived is not a stall (Burrow's false alarm on quiet topics).
    still_since = last.at
    for s in reversed(samples):
        if s.committed != last.committed or s.lag <= 0:
            break
        still_since = s.at
    if (last.at - still_since).total_seconds() >= stall_after_s:
        return Status.STALLED
    if (last.time_lag_s or 0) > lag_threshold_s:
        return Status.LAGGING
    recent = [s.lag for s in samples[-_GROWTH_SAMPLES:]]
    if len(recent) == _GROWTH_SAMPLES and all(b > a for a, b in pairwise(recent)):
        return Status.LAGGING
    return Status.OK


Waiting = tuple[str, int, int | None]  # country, partition, committed offset or None
OldestWaiting = Callable[[Sequence[Waiting]], Mapping[tuple[str, int], datetime | None]]
"""For each (country, partition, committed offset or None): the broker time of the oldest
record at or after that offset, or None if none is known; all in one call (one query)."""


class GroupProbe:
    """Samples the consumer groups of many countries in a few admin requests."""

    def __init__(
        self, settings: Settings, group_of: Callable[[str], str], hub_prefix: str = ""
    ) -> None:
        self._settings = settings
        self._names = TopicNames(settings.topic_prefix)
        self._group_of = group_of
        self._hub_prefix = hub_prefix  # groups of adapters serving several countries
        self._admin: Any = None
        self._partitions: dict[str, list[int]] = {}

    def sample(
        self, countries: Iterable[str], oldest_waiting: OldestWaiting, now: datetime
    ) -> dict[str, Sample]:
        countries = list(countries)
        if not countries:
            return {}
        try:
            return self._sample(countries, oldest_waiting, now)
        except KafkaError as exc:
            self.close()  # a fresh client next time
            raise BrokerUnavailable(f"sampling consumer groups: {explain(exc)}") from exc

    def _hubs(self, admin: Any) -> list[str]:
        if not self._hub_prefix:
            return []
        names = (str(g.get("group_id", "")) for g in admin.list_groups())
        return sorted(n for n in names if n.startswith(self._hub_prefix))

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None

    def _sample(
        self, countries: list[str], oldest_waiting: OldestWaiting, now: datetime
    ) -> dict[str, Sample]:
        if self._admin is None:
            self._admin = admin_client(self._settings)
        admin = self._admin
        topics = {cc: self._names.notices(cc) for cc in countries}
        unknown = [t for t in topics.values() if t not in self._partitions]
        if unknown:
            for desc in admin.describe_topics(unknown):
                if desc["error_code"] == 0:
                    self._partitions[desc["name"]] = sorted(
                        p["partition_index"] for p in desc["partitions"]
                    )
        tps = {
            cc: [TopicPartition(t, p) for p in self._partitions.get(t, [])]
            for cc, t in topics.items()
        }
        every = [tp for group in tps.values() for tp in group]
        ends = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in every})
        groups = {cc: self._group_of(cc) for cc in countries}
        committed = admin.list_group_offsets({groups[cc]: tps[cc] for cc in countries})
        described = admin.describe_groups(list(groups.values()))
        hubs = self._hubs(admin)
        if hubs:
            committed.update(admin.list_group_offsets(dict.fromkeys(hubs)))
            described.update(admin.describe_groups(hubs))

        def members(group: str) -> int:
            return len(described.get(group, {}).get("members") or [])

        for cc in countries:
            # A country served by a hub: the hub's group that has committed its offsets,
            # preferring a live one, then the one furthest on.
            serving = [g for g in hubs if any(tp in committed.get(g, {}) for tp in tps[cc])]
            if serving:
                groups[cc] = max(
                    [groups[cc], *serving],
                    key=lambda g: (
                        members(g) > 0,
                        sum(
                            committed.get(g, {})[tp].offset
                            for tp in tps[cc]
                            if tp in committed.get(g, {})
                        ),
                    ),
                )
        done_at: dict[tuple[str, TopicPartition], int] = {}  # -1: never committed
        for cc in countries:
            offsets = committed.get(groups[cc], {})
            for tp in tps[cc]:
                done_at[cc, tp] = offsets[tp].offset if tp in offsets else -1
        waiting = [
            (cc, tp.partition, done if done >= 0 else None)
            for (cc, tp), done in done_at.items()
            if ends[tp].offset > max(done, 0)
        ]
        oldest = oldest_waiting(waiting) if waiting else {}
        out = {}
        for cc in countries:
            end_total, done_total, ever = 0, 0, False
            times = []
            for tp in tps[cc]:
                end, done = ends[tp].offset, done_at[cc, tp]
                ever = ever or done >= 0
                end_total += end
                done_total += max(done, 0)
                if end > max(done, 0) and (t := oldest.get((cc, tp.partition))) is not None:
                    times.append(t)
            out[cc] = Sample(
                at=now,
                end_offset=end_total,
                committed=done_total if ever else None,
                members=members(groups[cc]),
                time_lag_s=(now - min(times)).total_seconds() if times else None,
            )
        return out
