"""The plug-in contract for a country's local information system, and how plug-ins are found.

A bureau whose system is not a table of ours (a legacy schema, a REST API, a batch system fed
by files) writes a :class:`LocalSystem`. The adapter wraps it in a :class:`LedgerSink`, which
keeps a ledger of the highest version each notice has reached, so that the plug-in only ever
sees newer versions, and a withdrawn notice never comes back, whatever order Kafka delivers in.

Where the ledger lives decides how far these guarantees reach, first match wins:

1. in the plug-in's own system, when it offers a database (:meth:`LocalSystem.ledger_url`;
   ``legacy-postgres`` does, in its schema): the ledger moves and is backed up with the data;
2. in a database shared by every host of the adapters: the setting ``ledger_database_url``
   (``NOTICE_BUS_LEDGER_DATABASE_URL``), overridden by ``notice-bus adapter --ledger-url``;
   ``{country}`` in it stands for the country's code;
3. else in a SQLite file on this host, ``.notice-bus/ledger-CC.db``, and the adapter warns:
   ordering is then kept per host only. When the country's partitions move to another host,
   or the host loses its disk, a version older than the one already taken in, or a notice
   already withdrawn, may reach the plug-in again.

One table, ``notice_ledger``, keyed by country and notice id, so several countries may share
a database. A per-country file written before the country column existed is still read as it
is. A withdrawal the adapter makes itself because an update no longer addresses the country
(reason :data:`~notice_bus.wire.model.NOT_ADDRESSED`) is recorded as ``UNLISTED``, not ``CANCEL``:
a later version that addresses the country again reaches the plug-in; a CANCEL is final.

Plug-ins are chosen by configuration: ``notice-bus adapter --system NAME --system-config
FILE.toml``, where NAME is an entry point of the ``notice_bus.local_systems`` group (the
built-in ones are ``sql``, ``legacy-postgres``, ``rest`` and ``file-drop``) or a
``module:Class`` path, and the TOML file's keys are passed to the class as keyword arguments.
"""

from __future__ import annotations

import importlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, inspect, select

from notice_bus.bureau.sinks.sink import BufferedSink, BureauHooks, Health, Sink
from notice_bus.errors import ConfigError, LocalSystemRejected
from notice_bus.runtime.db import (
    create_tables,
    dialect_insert,
    make_engine,
    redact,
    transaction,
    translate_errors,
)
from notice_bus.runtime.settings import STATE_DIR, read_toml
from notice_bus.wire.digest import Entry
from notice_bus.wire.model import NOT_ADDRESSED, Action, NoticeEvent, Reminder, Response
from notice_bus.wire.validation import NOTICE_ID

ENTRY_POINT_GROUP = "notice_bus.local_systems"
log = logging.getLogger("notice_bus.local_system")


class LocalSystem(BureauHooks, ABC):
    """A country's local information system, as a plug-in sees it.

    - ``write`` takes in notices (PUBLISH or UPDATE events): each notice at most once per
      call, at its newest version. ``withdraw`` takes CANCEL events: the notice must no longer
      be active locally; a cancel for a notice the system never had must be accepted. One
      whose ``reason`` is :data:`~notice_bus.wire.model.NOT_ADDRESSED` (the notice was retargeted
      away from the country) is not final: a later version may be written after it, and must
      make the notice active again.
    - Both may be called again with the same versions after a crash or a retry: taking in a
      version twice must leave the same state as taking it in once.
    - Raise :class:`~notice_bus.errors.LocalSystemRejected` only when the system refuses the
      notice itself for good (a value or constraint it will never accept): the adapter
      dead-letters it. Raise :class:`~notice_bus.errors.LocalSystemUnavailable` for anything
      else, whatever an operator repairs included (unreachable, "try later", permission
      denied, read-only, missing table, expired credentials): the adapter holds the batch,
      retries with backoff, and commits nothing meanwhile.
    - ``health`` is cheap and never raises; the adapter asks it before retrying after an outage.
    - ``entries`` lists what the system holds, for copy verification, with the semantics of
      :meth:`~notice_bus.bureau.sinks.sink.Sink.entries`; the default, None, says it cannot
      (the copy is then reported UNVERIFIABLE). Set :attr:`content_listed` False when the
      system keeps only part of a notice, so that its content hash could never equal HQ's.
    - A copy check's repair (``repair = "mend"``) calls ``write`` and ``withdraw`` directly,
      bypassing the ledger, for notices the system lacks or holds at an older version, and
      ``withdraw`` with a cancel of the version the system holds as ACTIVE (a resurrected
      notice): a system that can should apply such a cancel over the same version.
    """

    content_listed: bool = True

    @abstractmethod
    def write(self, notices: Sequence[NoticeEvent]) -> None:
        """Create or replace these notices."""

    @abstractmethod
    def withdraw(self, cancels: Sequence[NoticeEvent]) -> None:
        """Mark these notices withdrawn."""

    def health(self) -> Health:
        return Health(True)

    def entries(self) -> Iterator[Entry] | None:
        """Every notice the system holds (see the class docstring); None: it cannot list."""
        return None

    def ledger_url(self) -> str | None:
        """A database of this system's where the adapter may keep the version ledger (a table
        ``notice_ledger``, created when missing), so that it lives, moves and is restored with
        the data; None (the default) when the system has none."""
        return None

    def ledger_schema(self) -> str | None:
        """The schema of :meth:`ledger_url` for the ledger table; None for the default one."""
        return None

    def close(self) -> None:
        """Release connections."""


LEDGER_TABLE = "notice_ledger"
#: The ledger's action for a withdrawal because the notice no longer addresses the country.
UNLISTED = "UNLISTED"
_warned_local = False  # the local-file warning is given once per process


def ledger_table(schema: str | None = None, *, by_country: bool = True) -> Table:
    """The ledger, in ``schema``; ``by_country=False`` is the layout of the per-country files
    written before several countries could share one database."""
    key = [Column("country", String(2), primary_key=True)] if by_country else []
    return Table(
        LEDGER_TABLE,
        MetaData(schema=schema),
        *key,
        Column("notice_id", String(16), primary_key=True),
        Column("version", Integer, nullable=False),
        Column("action", String(8), nullable=False),
    )


def local_ledger_url(country: str) -> str:
    return f"sqlite:///{STATE_DIR}/ledger-{country}.db"


class LedgerSink(BufferedSink):
    """Makes any :class:`LocalSystem` idempotent and version-ordered.

    Per flush: drop every event not newer than the ledger's version (or for a notice
    cancelled by HQ), hand the rest to the plug-in, then record their versions. A crash
    between the plug-in's write and the ledger's update replays the same versions, which the
    plug-in takes in idempotently; offsets are committed only after the ledger, so no older
    version can slip in between.

    The ledger is in the plug-in's own database when it offers one
    (:meth:`LocalSystem.ledger_url`), else at ``ledger_url`` (a shared database;
    ``{country}`` stands for ``country``), else in this host's SQLite file, with a warning:
    see the module docstring.
    """

    def __init__(
        self, system: LocalSystem, ledger_url: str | None = None, *, country: str = ""
    ) -> None:
        super().__init__()
        self.system = system
        self.country = country
        url, schema = system.ledger_url(), system.ledger_schema()
        if url is None:
            schema = None
            if ledger_url:
                url = ledger_url.replace("{country}", country)
            else:
                url = local_ledger_url(country)
                _warn_local(url)
        self.url = url
        self.engine = make_engine(url)
        self._schema = schema
        self._table: Table | None = None  # opened on first use: its database may be down now
        self._record: Any = None

    def _open(self) -> Table:
        """The ledger table, created when missing; an existing one is used in its layout."""
        if self._table is not None:
            return self._table
        schema = self._schema
        with translate_errors(str(self.engine.url)), self.engine.connect() as conn:
            found = inspect(conn)
            exists = found.has_table(LEDGER_TABLE, schema=schema)
            columns = {c["name"] for c in found.get_columns(LEDGER_TABLE, schema)} if exists else ()
        table = ledger_table(schema, by_country=not exists or "country" in columns)
        if not exists:
            create_tables(self.engine, table.metadata)
        stmt = dialect_insert(self.engine)(table)
        self._record = stmt.on_conflict_do_update(
            index_elements=[c.name for c in table.primary_key],
            set_={"version": stmt.excluded.version, "action": stmt.excluded.action},
            where=table.c.version < stmt.excluded.version,
        )
        self._table = table
        return table

    def flush(self) -> None:
        events = self._buffers.pending()
        if not events:
            return
        self._hand_over(self._newer_than_ledger(events))
        self._buffers.clear()

    def _hand_over(self, fresh: Sequence[NoticeEvent]) -> None:
        """Publications and updates to the plug-in's ``write``, cancels to its ``withdraw``,
        then their versions into the ledger."""
        active = [e for e in fresh if e.action is not Action.CANCEL]
        cancels = [e for e in fresh if e.action is Action.CANCEL]
        if active:
            self.system.write(active)
        if cancels:
            self.system.withdraw(cancels)
        if fresh:
            self._record_versions(fresh)

    def _record_versions(self, events: Sequence[NoticeEvent]) -> None:
        rows = [
            {"notice_id": e.notice_id, "version": e.version, "action": _ledger_action(e)}
            for e in events
        ]
        if "country" in self._open().c:
            for row in rows:
                row["country"] = self.country
        with transaction(self.engine) as conn:
            conn.execute(self._record, rows)

    def health(self) -> Health:
        return self.system.health()

    def remind(self, reminder: Reminder) -> None:
        self.system.remind(reminder)

    def responses(self) -> Sequence[tuple[object, Response]]:
        return self.system.responses()

    def responses_sent(self, handles: Sequence[object]) -> None:
        self.system.responses_sent(handles)

    def close(self) -> None:
        self.system.close()
        self.engine.dispose()

    @property
    def content_listed(self) -> bool:  # type: ignore[override]
        return self.system.content_listed

    def entries(self) -> Iterator[Entry] | None:
        """The plug-in's own listing: what its system holds, not what the ledger recorded."""
        return self.system.entries()

    def force(self, events: Sequence[NoticeEvent]) -> None:
        """Hand ``events`` to the plug-in whatever the ledger says (it says the notices were
        taken in: the system lost or changed them since), then record their versions."""
        latest: dict[str, NoticeEvent] = {}
        for e in events:
            if e.notice_id not in latest or latest[e.notice_id].version < e.version:
                latest[e.notice_id] = e
        self._hand_over(list(latest.values()))

    def _newer_than_ledger(self, events: Sequence[NoticeEvent]) -> list[NoticeEvent]:
        t = self._open()
        query = select(t.c.notice_id, t.c.version, t.c.action).where(
            t.c.notice_id.in_([e.notice_id for e in events])
        )
        if "country" in t.c:
            query = query.where(t.c.country == self.country)
        with translate_errors(str(self.engine.url)), self.engine.connect() as conn:
            known = {r.notice_id: (r.version, r.action) for r in conn.execute(query)}
        fresh = []
        for e in events:
            version, action = known.get(e.notice_id, (0, ""))
            if e.version > version and action != Action.CANCEL.value:
                fresh.append(e)
        return fresh


def _ledger_action(event: NoticeEvent) -> str:
    if event.action is Action.CANCEL and event.reason == NOT_ADDRESSED:
        return UNLISTED  # not final: a later version addressed to the country again passes
    return event.action.value


def _warn_local(url: str) -> None:
    global _warned_local
    if not _warned_local:
        _warned_local = True
        log.warning(
            "plug-in version ledger in %s, on this host's disk: versions are ordered, and"
            " withdrawn notices kept out, per host only; if partitions move to another host or"
            " the disk is lost, a stale version may reach the local system. Set"
            " ledger_database_url (NOTICE_BUS_LEDGER_DATABASE_URL) or --ledger-url to a shared"
            " database.",
            redact(url),
        )


def external_id(event: NoticeEvent) -> str:
    """The notice id as it may appear in a path or URL: ``2026/17`` -> ``2026-17``. Ids come
    validated from the adapter; checked again because they become paths."""
    if not NOTICE_ID.match(event.notice_id):
        raise LocalSystemRejected(f"notice id {event.notice_id!r} cannot name a path")
    return event.notice_id.replace("/", "-")


def notice_document(event: NoticeEvent) -> dict[str, Any]:
    """A notice version as the JSON document plug-ins hand to systems that take JSON."""
    if event.person is None:
        raise LocalSystemRejected(f"notice {event.notice_id} v{event.version} has no person")
    return {
        **event.person.to_avro(),
        "notice_id": event.notice_id,
        "version": event.version,
        "status": "ACTIVE",
        "requesting_country": event.requesting_country,
        "published_at": event.published_at.isoformat(),
        "target_countries": list(event.target_countries),
    }


def withdrawal_document(event: NoticeEvent) -> dict[str, Any]:
    """A cancel as the JSON document plug-ins hand to systems that take JSON."""
    return {
        "notice_id": event.notice_id,
        "version": event.version,
        "reason": event.reason,
        "published_at": event.published_at.isoformat(),
    }


def load_system(name: str, options: Mapping[str, Any]) -> LocalSystem | Sink:
    """Instantiate the plug-in ``name`` (entry point or ``module:Class``) with ``options``."""
    target: Any
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            target = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"local system plug-in {name!r} cannot be loaded: {exc}") from exc
    else:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        if not found:
            known = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
            raise ConfigError(f"no local system plug-in {name!r}; known: {', '.join(known)}")
        target = found[0].load()
    try:
        system = target(**options)
    except TypeError as exc:
        raise ConfigError(f"plug-in {name!r} does not accept these options: {exc}") from exc
    if not isinstance(system, LocalSystem | Sink):
        raise ConfigError(f"{name!r} is neither a LocalSystem nor a Sink")
    return system


def read_system_config(path: str | Path) -> dict[str, Any]:
    return read_toml(path, "plug-in config")


def as_sink(
    system: LocalSystem | Sink, ledger_url: str | None = None, *, country: str = ""
) -> Sink:
    """A sink for the adapter: sinks as they are, plug-ins behind a version ledger (see
    :class:`LedgerSink` for ``ledger_url``)."""
    if isinstance(system, Sink):
        return system
    return LedgerSink(system, ledger_url, country=country)


@dataclass(frozen=True)
class Systems:
    """Where each country's local system is: plug-in ``name`` with ``options``, ``{country}``
    in any string standing for the country's code, and ``ledger_url``, the shared database of
    the version ledger of plug-ins that do not keep it themselves (None: a file on this host;
    see :class:`LedgerSink`). Picklable, so that a hub's worker processes can make their own
    sinks."""

    name: str
    options: Mapping[str, Any]
    ledger_url: str | None = None

    def sink(self, country: str) -> Sink:
        mine = {
            k: v.replace("{country}", country) if isinstance(v, str) else v
            for k, v in self.options.items()
        }
        return as_sink(load_system(self.name, mine), self.ledger_url, country=country)
