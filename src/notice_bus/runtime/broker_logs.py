"""What a local broker's own logs say about where time went: its garbage collector's pauses
(``gc.log``, always written) and, when asked for, every request it completed with the
broker's split of the time (``requests.log``: Kafka's ``kafka.request.logger`` at DEBUG).

They are how a stall seen by a client is pinned on the broker, or cleared of it: a produce
request that took 3 s in ``requests.log`` with 3 s of ``requestQueueTimeMs`` waited for a
request handler; with 3 s of ``localTimeMs``, the handler itself was slow (a lock, the disk);
a GC pause of 3 s in ``gc.log`` stopped everything. ``bench/stalls.py`` reads them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

#: The broker's own log: warnings and errors only, to ``{log}``.
BASE_LOG4J = """status = error
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = FILE
"""

#: The file appender and logger that write every completed request to ``{requests}``.
REQUEST_LOG4J = """appender.requests.type = File
appender.requests.name = REQUESTS
appender.requests.fileName = {requests}
appender.requests.layout.type = PatternLayout
appender.requests.layout.pattern = [%d{{yyyy-MM-dd'T'HH:mm:ss.SSSZ}}] %m%n
logger.requests.name = kafka.request.logger
logger.requests.level = DEBUG
logger.requests.additivity = false
logger.requests.appenderRef.requests.ref = REQUESTS
"""


def gc_flags(workdir: Path) -> list[str]:
    """The JVM options that log every collection and safepoint to ``workdir/gc.log`` (three
    files of 20 MB at most), with wall-clock times to set beside a client's."""
    return [f"-Xlog:gc*,safepoint:file={workdir / 'gc.log'}:time,uptime:filecount=3,filesize=20m"]


@dataclass(frozen=True)
class Pause:
    """A stop of the whole JVM: a collection, or any other safepoint."""

    at: datetime
    ms: float
    what: str


@dataclass(frozen=True)
class Request:
    """A completed request, with the broker's split of its time (milliseconds)."""

    at: datetime
    api: str
    total_ms: float
    queue_ms: float
    local_ms: float
    remote_ms: float
    response_queue_ms: float
    send_ms: float


_GC_PAUSE = re.compile(r"^\[([^\]]+)\]\[[^\]]+\] GC\(\d+\) (Pause .*?) (\d+(?:\.\d+)?)ms$")
_SAFEPOINT = re.compile(r"^\[([^\]]+)\]\[[^\]]+\] Safepoint \"([^\"]+)\".*Total: (\d+) ns$")


def _when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def gc_pauses(workdir: Path, min_ms: float = 0.0) -> list[Pause]:
    """The collections and safepoints of ``workdir/gc.log`` that stopped the JVM for
    ``min_ms`` or more, oldest first."""
    out: list[Pause] = []
    for path in sorted(workdir.glob("gc.log*")):
        for line in path.read_text(errors="replace").splitlines():
            if m := _GC_PAUSE.match(line):
                pause = Pause(_when(m[1]), float(m[3]), m[2])
            elif m := _SAFEPOINT.match(line):
                pause = Pause(_when(m[1]), int(m[3]) / 1e6, f"safepoint {m[2]}")
            else:
                continue
            if pause.ms >= min_ms:
                out.append(pause)
    return sorted(out, key=lambda p: p.at)


def slow_requests(path: Path, min_ms: float = 0.0) -> list[Request]:
    """The requests of a ``requests.log`` that took ``min_ms`` or more, oldest first."""
    out: list[Request] = []
    if not path.exists():
        return out
    for line in path.read_text(errors="replace").splitlines():
        stamp, _, rest = line.partition("] Completed request:")
        if not rest:
            continue
        try:
            done = json.loads(rest)
        except ValueError:
            continue
        total = float(done.get("totalTimeMs", 0))
        if total < min_ms:
            continue
        header = done.get("requestHeader", {})
        out.append(
            Request(
                at=datetime.fromisoformat(stamp.lstrip("[")),
                api=str(header.get("requestApiKeyName", header.get("requestApiKey", "?"))),
                total_ms=total,
                queue_ms=float(done.get("requestQueueTimeMs", 0)),
                local_ms=float(done.get("localTimeMs", 0)),
                remote_ms=float(done.get("remoteTimeMs", 0)),
                response_queue_ms=float(done.get("responseQueueTimeMs", 0)),
                send_ms=float(done.get("sendTimeMs", 0)),
            )
        )
    return out
