"""The contract between a country adapter and the country's local information system."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from notice_bus.wire.digest import Entry
from notice_bus.wire.model import NOT_ADDRESSED, Action, NoticeEvent, Reminder, Response

log = logging.getLogger("notice_bus.sink")


@dataclass(frozen=True, slots=True)
class Health:
    """Whether a local system answers now, and if not, what it said."""

    ok: bool
    detail: str = ""


class BureauHooks:
    """What a local system may do beyond taking in notices: show HQ's reminders to its
    officers, and hand over the answers they gave. Every hook is optional."""

    def remind(self, reminder: Reminder) -> None:
        """Surface HQ's reminder of an overdue notice locally. The default logs it."""
        log.warning("%s: HQ reminds: %s", reminder.country, reminder.text)

    def responses(self) -> Sequence[tuple[object, Response]]:
        """Answers the bureau gave in its local system that HQ has not had yet, each with a
        handle for :meth:`responses_sent`. The default has none."""
        return ()

    def responses_sent(self, handles: Sequence[object]) -> None:
        """The broker has these answers; do not offer them again."""


class Sink(BureauHooks, ABC):
    """A local information system that takes in notices, in batches per Kafka partition.

    Semantics every implementation keeps:

    - ``add`` only buffers; nothing is durable until ``flush`` returns.
    - ``flush`` makes everything buffered durable, then empties the buffer. If it raises, the
      adapter treats the whole batch as not written and will offer it again: so writes must be
      idempotent.
    - Writes are ordered by version: a notice ends at the highest version ever added, whatever
      order versions arrive in; a withdrawn notice stays withdrawn (a stale update never
      brings it back, and a cancel for a notice never seen is kept, so that its earlier
      versions, should they arrive later, are not taken in).
    - ``flush`` raises :class:`~notice_bus.errors.LocalSystemUnavailable` (retriable) when the
      system is unreachable, and :class:`~notice_bus.errors.LocalSystemRejected` when it refuses
      the batch for good.

    Copy verification (:mod:`notice_bus.bureau.copies`) also asks two optional things:
    :meth:`entries` (what the system holds; None, the default, reports the copy
    UNVERIFIABLE) and :meth:`force` (the repair of what a check found missing, stale or
    resurrected).
    """

    #: Whether :meth:`entries` gives each ACTIVE notice's content hash. False for a system that
    #: keeps only part of a notice (its hash could never equal HQ's): its entries carry ""
    #: for every notice, and a check compares versions and states only.
    content_listed: bool = True

    @abstractmethod
    def add(self, event: NoticeEvent, partition: int) -> None:
        """Buffer ``event``, read from ``partition`` of the country's topic."""

    @abstractmethod
    def flush(self) -> None:
        """Write everything buffered, durably."""

    def discard(self, partitions: Iterable[int]) -> None:
        """Forget what was buffered from ``partitions`` (they were taken away by a rebalance)."""

    def health(self) -> Health:
        """Cheap, never raises; the adapter asks before retrying after an outage."""
        return Health(True)

    def close(self) -> None:
        """Release connections. The default does nothing."""

    def entries(self) -> Iterator[Entry] | None:
        """Every notice the local system holds, one :class:`~notice_bus.wire.digest.Entry` per
        notice id, in any order: its version, its state (``ACTIVE`` or ``WITHDRAWN``, a
        withdrawal of any reason, a cancel for a notice never had included) and, for an
        ACTIVE notice, ``content_hash(requesting_country, fields)`` of what the system holds
        (``""`` for a WITHDRAWN one, and for every one when :attr:`content_listed` is False).
        Read from the system itself, not from what the adapter remembers writing: the point
        is to find what changed behind its back. None (the default): the system cannot list
        what it holds, and its copy is reported UNVERIFIABLE, never as consistent."""
        return None

    def force(self, events: Sequence[NoticeEvent]) -> None:
        """Write HQ's latest versions of notices a copy check found missing, stale or
        resurrected, durably, even where the system holds the same version (a resurrected
        notice: the row says ACTIVE at the version of HQ's cancel, which an ordinary write
        ignores as already taken). Never lowers a version. The default adds and flushes, which
        mends missing and stale notices only; sinks that can do better override it."""
        for e in events:
            self.add(e, 0)
        self.flush()


class PartitionBuffers:
    """Buffered events per partition, collapsed to the highest version of each notice (or to
    its cancel, which no later version undoes)."""

    def __init__(self) -> None:
        self._by_partition: dict[int, dict[str, NoticeEvent]] = {}

    def add(self, event: NoticeEvent, partition: int) -> None:
        buf = self._by_partition.setdefault(partition, {})
        held = buf.get(event.notice_id)
        if held is None or (held.version < event.version and not _final(held)):
            buf[event.notice_id] = event

    def discard(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self._by_partition.pop(p, None)

    def pending(self) -> list[NoticeEvent]:
        """Every buffered event, one per notice."""
        # Keys are notice ids, and a notice lives in one partition, so no notice appears twice.
        return [e for buf in self._by_partition.values() for e in buf.values()]

    def clear(self) -> None:
        self._by_partition.clear()

    def __len__(self) -> int:
        return sum(len(b) for b in self._by_partition.values())


def _final(event: NoticeEvent) -> bool:
    """A cancel from HQ: nothing after it may make the notice active again."""
    return event.action is Action.CANCEL and event.reason != NOT_ADDRESSED


class BufferedSink(Sink):
    """A sink whose ``add`` and ``discard`` keep :class:`PartitionBuffers`; subclasses write
    ``self._buffers.pending()`` in ``flush`` and ``clear()`` them once it is durable."""

    def __init__(self) -> None:
        self._buffers = PartitionBuffers()

    def add(self, event: NoticeEvent, partition: int) -> None:
        self._buffers.add(event, partition)

    def discard(self, partitions: Iterable[int]) -> None:
        self._buffers.discard(partitions)
