"""A tracker split across processes by country, for when one process cannot keep up.

One tracker process takes in about 15,000 acknowledgements a second here, most of it Python:
kafka-python's fetch, Avro decoding and the rows for PostgreSQL. ``notice-bus tracker
--workers N`` runs N trackers, each in its own process and reading the topics of the
countries :func:`~notice_bus.tracker.shard_of` gives it, into the same database. Their
batches touch disjoint rows (a row's country decides its worker), so they never wait on each
other's locks. Worker 0 also samples the consumer groups and runs the escalation hook.

The parent supervises: a worker that dies is started again (its uncommitted batch is read
again, which stores nothing twice), and SIGTERM or SIGINT stops them all.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import signal
import threading
import time
from multiprocessing.process import BaseProcess
from typing import Any

from notice_bus.errors import ConfigError, NoticeBusError
from notice_bus.settings import Settings

log = logging.getLogger("notice_bus.tracker")
_SPAWN = multiprocessing.get_context("spawn")  # no forked copies of Kafka clients' threads


class TrackerWorkers:
    """``workers`` tracker processes; ``escalate`` gives worker 0 the escalation hook.

    ``hold``, if given, is an event (from :func:`hold_event`) the workers wait for once
    connected, so that a measurement starts with every worker ready."""

    def __init__(
        self,
        settings: Settings,
        workers: int,
        *,
        database_url: str | None = None,
        escalate: bool = True,
        hold: Any = None,
    ) -> None:
        if workers < 1:
            raise ConfigError(f"--workers must be at least 1, not {workers}")
        self._args = (settings, database_url, workers, escalate, hold)
        self._ready: Any = _SPAWN.Queue()
        self._procs: list[BaseProcess] = [self._spawn(i) for i in range(workers)]
        self._stopping = False

    def _spawn(self, shard: int) -> BaseProcess:
        settings, url, workers, escalate, hold = self._args
        proc = _SPAWN.Process(
            target=_work,
            args=(settings, url, shard, workers, escalate, hold, self._ready),
            name=f"tracker-{shard}",
            daemon=False,
        )
        proc.start()
        return proc

    def pids(self) -> list[int | None]:
        """The workers' process ids, worker 0 first."""
        return [proc.pid for proc in self._procs]

    def wait_ready(self, timeout_s: float = 120) -> None:
        """Until every worker is connected; raises NoticeBusError if one dies or is late
        (what went wrong is on the worker's stderr)."""
        deadline = time.monotonic() + timeout_s
        ready = 0
        while ready < len(self._procs):
            try:
                self._ready.get(timeout=0.2)
                ready += 1
                continue
            except queue.Empty:
                pass
            for proc in self._procs:
                if proc.exitcode is not None:
                    raise NoticeBusError(f"{proc.name} exited with {proc.exitcode} on starting")
            if time.monotonic() > deadline:
                raise NoticeBusError(f"tracker workers not ready in {timeout_s:g} s")

    def supervise(self, stop: threading.Event, every_s: float = 1.0) -> None:
        """Start again any worker that died, until ``stop`` is set; then stop them all."""
        try:
            while not stop.wait(every_s):
                for i, proc in enumerate(self._procs):
                    if not proc.is_alive():
                        log.error("tracker worker %d died (exit %s), starting it again", i,
                                  proc.exitcode)  # fmt: skip
                        self._procs[i] = self._spawn(i)
        finally:
            self.stop()

    def stop(self, timeout_s: float = 60) -> None:
        """Ask every worker to finish its batch and leave; kill those that do not."""
        if self._stopping:
            return
        self._stopping = True
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: the worker's loop ends after its batch
        for proc in self._procs:
            proc.join(timeout_s)
            if proc.is_alive():
                log.error("tracker worker %s did not stop, killing it", proc.name)
                proc.kill()
                proc.join()


def hold_event() -> Any:
    """An event to hold the workers with (see :class:`TrackerWorkers`)."""
    return _SPAWN.Event()


def _work(
    settings: Settings,
    database_url: str | None,
    shard: int,
    shards: int,
    escalate: bool,
    hold: Any,
    ready: Any,
) -> None:
    """A worker process: one shard of the tracker until SIGTERM or SIGINT."""
    from notice_bus.escalation import Escalator
    from notice_bus.tracker import Tracker

    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s %(levelname)s tracker-{shard} %(message)s"
    )
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    tracker = Tracker(settings, database_url=database_url, shard=shard, shards=shards)
    escalator = Escalator(settings, tracker.engine) if escalate and shard == 0 else None
    tracker.on_sample = escalator
    ready.put(shard)
    if hold is not None:
        while not hold.wait(0.1) and not stop.is_set():
            pass
    try:
        tracker.run(stop)
    finally:
        if escalator is not None:
            escalator.close()
