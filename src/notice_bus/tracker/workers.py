"""A tracker split across processes by country: ``notice-bus tracker --workers N``.

One tracker process takes in about 15,000 acknowledgements a second here, most of it Python:
kafka-python's fetch, Avro decoding and the rows for PostgreSQL. N workers (see
:mod:`notice_bus.runtime.workers`) each read the topics of their shard's countries into the same
database. Their batches touch disjoint rows (a row's country decides its worker), so they
never wait on each other's locks. Worker 0 also samples the consumer groups and runs the
escalation hook.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from notice_bus.runtime.settings import Settings
from notice_bus.runtime.workers import Workers


class TrackerWorkers(Workers):
    """``workers`` tracker processes; ``escalate`` gives worker 0 the escalation hook;
    ``hold`` as for :class:`~notice_bus.runtime.workers.Workers`."""

    def __init__(
        self,
        settings: Settings,
        workers: int,
        *,
        database_url: str | None = None,
        escalate: bool = True,
        hold: Any = None,
    ) -> None:
        super().__init__("tracker", _track, workers, (settings, database_url, escalate), hold=hold)


def _track(
    shard: int,
    shards: int,
    stop: threading.Event,
    started: Callable[[], None],
    settings: Settings,
    database_url: str | None,
    escalate: bool,
) -> None:
    from notice_bus.tracker.escalation import Escalator
    from notice_bus.tracker.ingest import Tracker

    tracker = Tracker(settings, database_url=database_url, shard=shard, shards=shards)
    if not tracker.connect(stop):  # stopped while waiting for the broker
        tracker.close()
        return
    escalator = Escalator(settings, tracker.engine) if escalate and shard == 0 else None
    tracker.on_sample = escalator
    started()
    try:
        tracker.run(stop)
    finally:
        if escalator is not None:
            escalator.close()
