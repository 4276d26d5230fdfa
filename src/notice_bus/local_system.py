"""The plug-in contract for a country's local information system, and how plug-ins are found.

A bureau whose system is not a table of ours (a legacy schema, a REST API, a batch system fed
by files) writes a :class:`LocalSystem`. The adapter wraps it in a :class:`LedgerSink`, which
keeps a ledger of the highest version each notice has reached, so that the plug-in only ever
sees newer versions, and a withdrawn notice never comes back, whatever order Kafka delivers in.

Plug-ins are chosen by configuration: ``notice-bus adapter --system NAME --system-config
FILE.toml``, where NAME is an entry point of the ``notice_bus.local_systems`` group (the
built-in ones are ``sql``, ``legacy-postgres``, ``rest`` and ``file-drop``) or a
``module:Class`` path, and the TOML file's keys are passed to the class as keyword arguments.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, select

from notice_bus.db import (
    create_tables,
    dialect_insert,
    make_engine,
    transaction,
    translate_errors,
)
from notice_bus.errors import ConfigError, LocalSystemRejected
from notice_bus.model import Action, NoticeEvent, Reminder, Response
from notice_bus.settings import STATE_DIR, read_toml
from notice_bus.sink import BufferedSink, BureauHooks, Health, Sink
from notice_bus.validation import NOTICE_ID

ENTRY_POINT_GROUP = "notice_bus.local_systems"


class LocalSystem(BureauHooks, ABC):
    """A country's local information system, as a plug-in sees it.

    - ``write`` takes in notices (PUBLISH or UPDATE events): each notice at most once per
      call, at its newest version. ``withdraw`` takes CANCEL events: the notice must no longer
      be active locally; a cancel for a notice the system never had must be accepted.
    - Both may be called again with the same versions after a crash or a retry: taking in a
      version twice must leave the same state as taking it in once.
    - Raise :class:`~notice_bus.errors.LocalSystemUnavailable` when the system cannot be
      reached or answers "try later" (the adapter retries, with backoff, and commits nothing
      meanwhile), and :class:`~notice_bus.errors.LocalSystemRejected` when it refuses for good.
    - ``health`` is cheap and never raises; the adapter asks it before retrying after an outage.
    """

    @abstractmethod
    def write(self, notices: Sequence[NoticeEvent]) -> None:
        """Create or replace these notices."""

    @abstractmethod
    def withdraw(self, cancels: Sequence[NoticeEvent]) -> None:
        """Mark these notices withdrawn."""

    def health(self) -> Health:
        return Health(True)

    def close(self) -> None:
        """Release connections."""


_LEDGER_META = MetaData()
_LEDGER = Table(
    "notice_ledger",
    _LEDGER_META,
    Column("notice_id", String(16), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("action", String(8), nullable=False),
)


class LedgerSink(BufferedSink):
    """Makes any :class:`LocalSystem` idempotent and version-ordered.

    Per flush: drop every event not newer than the ledger's version (or for a withdrawn
    notice), hand the rest to the plug-in, then record their versions. A crash between the
    plug-in's write and the ledger's update replays the same versions, which the plug-in takes
    in idempotently; offsets are committed only after the ledger, so no older version can slip
    in between.
    """

    def __init__(self, system: LocalSystem, ledger_url: str) -> None:
        super().__init__()
        self.system = system
        self.engine = make_engine(ledger_url)
        create_tables(self.engine, _LEDGER_META)
        insert = dialect_insert(self.engine)
        stmt = insert(_LEDGER)
        self._record = stmt.on_conflict_do_update(
            index_elements=["notice_id"],
            set_={"version": stmt.excluded.version, "action": stmt.excluded.action},
            where=_LEDGER.c.version < stmt.excluded.version,
        )

    def flush(self) -> None:
        events = self._buffers.pending()
        if not events:
            return
        fresh = self._newer_than_ledger(events)
        active = [e for e in fresh if e.action is not Action.CANCEL]
        cancels = [e for e in fresh if e.action is Action.CANCEL]
        if active:
            self.system.write(active)
        if cancels:
            self.system.withdraw(cancels)
        if fresh:
            rows = [
                {"notice_id": e.notice_id, "version": e.version, "action": e.action.value}
                for e in fresh
            ]
            with transaction(self.engine) as conn:
                conn.execute(self._record, rows)
        self._buffers.clear()

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

    def _newer_than_ledger(self, events: Sequence[NoticeEvent]) -> list[NoticeEvent]:
        ids = [e.notice_id for e in events]
        with translate_errors(str(self.engine.url)), self.engine.connect() as conn:
            known = {
                r.notice_id: (r.version, r.action)
                for r in conn.execute(select(_LEDGER).where(_LEDGER.c.notice_id.in_(ids)))
            }
        fresh = []
        for e in events:
            version, action = known.get(e.notice_id, (0, ""))
            if e.version > version and action != Action.CANCEL.value:
                fresh.append(e)
        return fresh


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


def as_sink(system: LocalSystem | Sink, ledger_url: str) -> Sink:
    """A sink for the adapter: sinks as they are, plug-ins behind a version ledger."""
    return system if isinstance(system, Sink) else LedgerSink(system, ledger_url)


@dataclass(frozen=True)
class Systems:
    """Where each country's local system is: plug-in ``name`` with ``options`` and a version
    ledger at ``ledger_url``, ``{country}`` in any string standing for the country's code.
    Picklable, so that a hub's worker processes can make their own sinks."""

    name: str
    options: Mapping[str, Any]
    ledger_url: str = f"sqlite:///{STATE_DIR}/ledger-{{country}}.db"

    def sink(self, country: str) -> Sink:
        mine = {
            k: v.replace("{country}", country) if isinstance(v, str) else v
            for k, v in self.options.items()
        }
        return as_sink(load_system(self.name, mine), self.ledger_url.replace("{country}", country))
