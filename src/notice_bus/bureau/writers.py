"""The adapter's writer threads: each lane's work with its local system, off the poll thread.

A local system that is slow, down, or hung (a database behind a dropped network, a file share
that blocks) must hold its own country only. So the polling thread never calls a local system:
it hands a lane's job to :class:`Writers`, waits a little for the common case of a quick write,
and goes on polling; a job that takes longer is collected on a later step. A lane has at most
one job at a time, so a sink is only ever used by one thread at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait

from notice_bus.errors import LocalSystemUnavailable, NoticeBusError

log = logging.getLogger("notice_bus.adapter")

Job = Callable[[], object]  # what it returns is not used


class Writers:
    """Runs one job per lane (keyed by country) on a pool of ``threads``.

    A job's outcome is ``None`` (done) or the :class:`NoticeBusError` it raised. Anything else
    it raises (a plug-in's bug) becomes :class:`LocalSystemUnavailable`, so that the lane holds
    and retries with the error in the log, instead of the process dying on every restart.
    """

    def __init__(self, threads: int) -> None:
        self._pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="notice-bus-write")
        self._running: dict[str, Future[NoticeBusError | None]] = {}

    def start(self, key: str, job: Job) -> None:
        if key in self._running:
            raise RuntimeError(f"{key} already has a job running")  # a bug of ours
        self._running[key] = self._pool.submit(_outcome, key, job)

    def busy(self, key: str) -> bool:
        return key in self._running

    def __len__(self) -> int:
        return len(self._running)

    def wait(self, keys: Iterable[str], timeout_s: float) -> None:
        """Wait until the jobs of ``keys`` have ended, at most ``timeout_s``. (Not every job:
        one stuck on a hung system would make every wait last ``timeout_s``.)"""
        futures = [self._running[k] for k in keys if k in self._running]
        if futures:
            wait(futures, timeout=timeout_s)

    def ended(self) -> list[tuple[str, NoticeBusError | None]]:
        """The jobs that have ended since the last call, with their outcomes."""
        done = [key for key, future in self._running.items() if future.done()]
        return [(key, self._running.pop(key).result()) for key in done]

    def shutdown(self) -> None:
        """Wait for the jobs running (a write in hand finishes) and stop the threads."""
        self._pool.shutdown(wait=True)


def _outcome(key: str, job: Job) -> NoticeBusError | None:
    try:
        job()
    except NoticeBusError as exc:
        return exc
    except Exception as exc:
        log.exception("%s: the local system's code raised", key)
        return LocalSystemUnavailable(f"the local system's code raised {exc!r}")
    return None
