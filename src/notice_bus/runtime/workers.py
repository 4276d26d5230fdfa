"""Work split across processes by country, for when one Python process cannot keep up.

A process runs Python one thread at a time, so a tracker or a hub of many countries is
bound to one core however many threads it has. :class:`Workers` runs N processes of the
same job, each told its shard: the countries :func:`shard_of` gives it. The split depends
on the country code alone, so adding a country never moves the others.

The parent supervises: a worker that dies is started again (its uncommitted batch is read
again, which Kafka's committed offsets and our idempotent writes make harmless), at once if it
had been running a while, after 1, 2, 4 ... 60 s if it keeps dying soon after starting (a
database it cannot reach, a bad setting), so that its traceback is not printed every second.
:meth:`Workers.stop` (SIGTERM for each) lets every worker finish its batch and leave.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import signal
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from multiprocessing.process import BaseProcess
from typing import Any

from notice_bus.errors import ConfigError, NoticeBusError

log = logging.getLogger("notice_bus.workers")
_SPAWN = multiprocessing.get_context("spawn")  # no forked copies of Kafka clients' threads

# target(shard, shards, stop, started, *args): runs the shard's job until ``stop`` is set,
# calling ``started()`` once it is connected.
Target = Callable[..., None]
_STEADY_S = 30.0  # a worker that ran this long before dying is started again at once
_MAX_BACKOFF_S = 60.0


def backoff_s(failures: int) -> float:
    """How long to wait before starting again a worker that died ``failures`` times in a row
    soon after starting: 0 for none, then 1, 2, 4 ... up to a minute."""
    return 0.0 if failures < 1 else min(_MAX_BACKOFF_S, 2.0 ** (failures - 1))


def shard_of(country: str, shards: int) -> int:
    """Which of ``shards`` workers serves a country: the same on every run."""
    return zlib.crc32(country.encode()) % shards


def split(countries: Sequence[str], shards: int) -> list[list[str]]:
    """``countries`` by shard; ConfigError when a shard would have none."""
    if shards < 1:
        raise ConfigError(f"the number of processes must be at least 1, not {shards}")
    parts: list[list[str]] = [[] for _ in range(shards)]
    for cc in countries:
        parts[shard_of(cc, shards)].append(cc)
    empty = [i for i, part in enumerate(parts) if not part]
    if empty:
        raise ConfigError(
            f"{shards} processes for {len(countries)} countries leave process {empty[0]}"
            " without a country; use fewer processes"
        )
    return parts


class Workers:
    """``shards`` processes, each running ``target`` for its shard with ``args``.

    ``hold``, if given, is an event (from :func:`hold_event`) the workers wait for once
    started, so that a measurement begins with every worker ready."""

    def __init__(
        self,
        name: str,
        target: Target,
        shards: int,
        args: tuple[Any, ...] = (),
        *,
        hold: Any = None,
    ) -> None:
        if shards < 1:
            raise ConfigError(f"{name}: the number of processes must be at least 1, not {shards}")
        self.name = name
        self._target, self._shards, self._args, self._hold = target, shards, args, hold
        self._ready: Any = _SPAWN.Queue()
        self._started = [0.0] * shards
        self._failures = [0] * shards  # deaths in a row, each soon after starting
        self._due: list[float | None] = [None] * shards  # when a dead worker starts again
        self.restarts = 0
        self._procs: list[BaseProcess] = [self._spawn(i) for i in range(shards)]
        self._stopping = False

    def _spawn(self, shard: int) -> BaseProcess:
        self._started[shard] = time.monotonic()
        proc = _SPAWN.Process(
            target=_entry,
            args=(self.name, self._target, shard, self._shards, self._args, self._hold),
            kwargs={"ready": self._ready},
            name=f"{self.name}-{shard}",
            daemon=False,
        )
        proc.start()
        return proc

    def pids(self) -> list[int | None]:
        """The workers' process ids, worker 0 first."""
        return [proc.pid for proc in self._procs]

    def wait_ready(self, timeout_s: float = 120, stop: threading.Event | None = None) -> bool:
        """Until every worker is connected (True), or ``stop`` is set (False): workers wait
        for an absent broker as long as it takes. Raises NoticeBusError if one dies or is
        late (what went wrong is on the worker's stderr)."""
        deadline = time.monotonic() + timeout_s
        ready = 0
        while ready < len(self._procs):
            if stop is not None and stop.is_set():
                return False
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
                raise NoticeBusError(f"{self.name} workers not ready in {timeout_s:g} s")
        return True

    def supervise(self, stop: threading.Event, every_s: float = 1.0) -> None:
        """Start again any worker that died, until ``stop`` is set; then stop them all."""
        try:
            while not stop.wait(every_s):
                for i, proc in enumerate(self._procs):
                    if not proc.is_alive():
                        self._restart(i, proc)
        finally:
            self.stop()

    def _restart(self, i: int, proc: BaseProcess) -> None:
        now = time.monotonic()
        if self._due[i] is None:  # just found dead
            lived = now - self._started[i]
            self._failures[i] = self._failures[i] + 1 if lived < _STEADY_S else 0
            wait = backoff_s(self._failures[i])
            self._due[i] = now + wait
            log.error("%s died (exit %s) after %.0f s, starting it again in %.0f s",
                      proc.name, proc.exitcode, lived, wait)  # fmt: skip
        if now >= (self._due[i] or 0.0):
            self._due[i] = None
            self.restarts += 1
            self._procs[i] = self._spawn(i)

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
                log.error("%s did not stop, killing it", proc.name)
                proc.kill()
                proc.join()


def hold_event() -> Any:
    """An event to hold the workers with (see :class:`Workers`)."""
    return _SPAWN.Event()


def _entry(
    name: str,
    target: Target,
    shard: int,
    shards: int,
    args: tuple[Any, ...],
    hold: Any,
    *,
    ready: Any,
) -> None:
    """A worker process: its shard's job until SIGTERM or SIGINT."""
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s %(levelname)s {name}-{shard} %(message)s"
    )
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    def started() -> None:
        ready.put(shard)
        if hold is not None:
            while not hold.wait(0.1) and not stop.is_set():
                pass

    target(shard, shards, stop, started, *args)
