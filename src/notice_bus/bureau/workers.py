"""A hub's countries split across processes: ``notice-bus adapter --country ... --processes N``.

One process serves a hub's countries one Python thread at a time. At 196 countries and two
notices a second that process is busy most of the time (a write and an acknowledgement per
country per notice), and a notice waits behind the one before. N workers (see
:mod:`notice_bus.runtime.workers`) each serve the countries of their shard as a hub of their own:
their own consumer group, producer and local-system connections. A worker's group is
``--hub`` NAME.i-of-N (``default.i-of-N`` without one), so a restart resumes from its offsets
and a country added to a worker does not change its group.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from notice_bus.bureau.adapter import Adapter
from notice_bus.bureau.metrics import AdapterMetrics
from notice_bus.bureau.sinks.local_system import Systems
from notice_bus.bureau.sinks.sink import Sink
from notice_bus.runtime.kafka import keep_trying
from notice_bus.runtime.prometheus import serve
from notice_bus.runtime.settings import Settings
from notice_bus.runtime.workers import Workers, split
from notice_bus.wire.groups import DEFAULT_HUB


def run_adapter(
    settings: Settings,
    sinks: Mapping[str, Sink],
    stop: threading.Event,
    *,
    started: Callable[[], None] = lambda: None,
    hub: str | None = None,
    from_beginning: bool = False,
    instance_id: str | None = None,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
) -> None:
    """Serve ``sinks``' countries until ``stop`` is set (what ``notice-bus adapter`` runs).

    Without a broker it does not give up: it tries again with backoff, a WARNING each time
    (see :func:`~notice_bus.runtime.kafka.keep_trying`), and ``started()`` is called once connected.
    A missing topic or another configuration error still ends it."""
    metrics = AdapterMetrics()
    if metrics_port is not None:
        serve(metrics.registry, metrics_port, metrics_host)
    # Python's default 5 ms switch interval, not a shorter one: with writer threads running
    # beside the poll thread, 0.5 ms cost a 196-country host ~15% more CPU and p50/p95
    # latency (propagation benchmark, alternated A/B).
    what = f"adapter {','.join(sinks)}" if len(sinks) <= 5 else f"adapter of {len(sinks)} countries"

    def connect() -> Adapter:
        return Adapter(
            settings,
            sinks,
            hub=hub,
            from_beginning=from_beginning,
            instance_id=instance_id,
            metrics=metrics,
        )

    adapter = keep_trying(settings, what, connect, stop)
    if adapter is None:  # stopped before the broker answered
        for sink in sinks.values():
            sink.close()
        return
    started()
    adapter.run(stop)


class AdapterWorkers(Workers):
    """``processes`` workers serving ``countries`` between them, worker i the i-th part of
    :func:`~notice_bus.runtime.workers.split`. Worker i serves its metrics on ``metrics_port + i``.
    Raises ConfigError when a worker would have no country."""

    def __init__(
        self,
        settings: Settings,
        countries: Sequence[str],
        systems: Systems,
        processes: int,
        *,
        hub: str | None = None,
        from_beginning: bool = False,
        instance_id: str | None = None,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        hold: Any = None,
    ) -> None:
        parts = split(countries, processes)
        options = (hub, from_beginning, instance_id, metrics_port, metrics_host)
        super().__init__(
            "adapter", _adapt, processes, (settings, parts, systems, options), hold=hold
        )


def _adapt(
    shard: int,
    shards: int,
    stop: threading.Event,
    started: Callable[[], None],
    settings: Settings,
    parts: list[list[str]],
    systems: Systems,
    options: tuple[str | None, bool, str | None, int | None, str],
) -> None:
    hub, from_beginning, instance_id, port, host = options
    mine = parts[shard]
    run_adapter(
        settings,
        {cc: systems.sink(cc) for cc in mine},
        stop,
        started=started,
        hub=f"{hub or DEFAULT_HUB}.{shard + 1}-of-{shards}",
        from_beginning=from_beginning,
        instance_id=f"{instance_id}.{shard + 1}-of-{shards}" if instance_id else None,
        metrics_port=None if port is None else port + shard,
        metrics_host=host,
    )
