"""A local-system plug-in for an existing national "wanted persons" schema in PostgreSQL.

The schema is the bureau's, not ours (``schema.sql``, next to this module, shows it and
documents how our fields map onto its columns): this plug-in only reads and writes rows, and
refuses to start when a table or column it needs is missing.

Configuration (``--system legacy-postgres --system-config FILE.toml``)::

    database_url = "postgresql://notice_bus@db.police.example/wanted"
    schema = "interpol"   # optional: the PostgreSQL schema holding the tables

The adapter keeps this plug-in's version ledger (see
:mod:`notice_bus.bureau.sinks.local_system`) in the same database and schema, in a table
``notice_ledger`` it creates when missing (the role needs CREATE on the schema once, or the
bureau's DBA creates the table), so the ledger moves, and is backed up, with the records it
protects.

Copy verification: :meth:`LegacyPostgres.entries` lists ``wanted_person`` (revision and
state of every record) in one SELECT. The schema keeps only part of a notice (no eye or hair
colours, languages or images; heights in whole centimetres), so no content hash could equal
HQ's: ``content_listed`` is False, and a check compares revisions and states only; content
edited behind the adapter's back is not seen.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
    and_,
    delete,
    inspect,
    or_,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert

from notice_bus.bureau.sinks.local_system import LocalSystem
from notice_bus.bureau.sinks.sink import Health
from notice_bus.errors import ConfigError, LocalSystemRejected, LocalSystemUnavailable
from notice_bus.runtime.db import make_engine, redact, transaction, translate_errors
from notice_bus.wire.digest import Entry
from notice_bus.wire.model import NOT_ADDRESSED, NoticeEvent, Person, utcnow

ACTIVE = "A"
WITHDRAWN = "W"


def _tables(schema: str | None) -> tuple[Table, Table, Table]:
    """The columns this plug-in uses, declared (never created) in ``schema``."""
    meta = MetaData(schema=schema)
    person = Table(
        "wanted_person",
        meta,
        Column("wp_ref", String(20), primary_key=True),
        Column("surname", String),
        Column("given_names", String),
        Column("birth_date_text", String(10)),
        Column("birth_place", String),
        Column("gender", String(1)),
        Column("birth_country", String(2)),
        Column("requesting_state", String(2)),
        Column("height_cm", Integer),
        Column("weight_kg", Numeric(4, 1)),
        Column("marks", Text),
        Column("record_state", String(1)),
        Column("interpol_revision", Integer),
        Column("last_change", DateTime(timezone=True)),
        Column("withdrawn_reason", Text),
    )
    warrant = Table(
        "wanted_person_warrant",
        meta,
        Column("wp_ref", String(20), primary_key=True),
        Column("seq", SmallInteger, primary_key=True),
        Column("issuing_state", String(2)),
        Column("offence", Text),
        Column("offence_en", Text),
    )
    nationality = Table(
        "wanted_person_nationality",
        meta,
        Column("wp_ref", String(20), primary_key=True),
        Column("country", String(2), primary_key=True),
    )
    return person, warrant, nationality


class LegacyPostgres(LocalSystem):
    """Maps notices onto ``wanted_person`` and its warrant and nationality child tables.

    Each ``write`` or ``withdraw`` call is one transaction. A person row changes only for a
    higher ``interpol_revision``, and an active version never reactivates a record withdrawn by
    a cancel, so replays and reordering are harmless even without the ledger in front. A record
    withdrawn because the notice no longer addressed the country (``withdrawn_reason``
    :data:`~notice_bus.wire.model.NOT_ADDRESSED`) is reactivated by a higher revision, and such a
    withdrawal never overwrites a cancel's. Child rows are replaced only when their person row
    was; a withdrawal keeps them, for the record. A cancel also applies over an ACTIVE record
    of its own revision (a replay over the withdrawn record changes nothing): that is how a
    copy check mends a cancelled record someone set back to active.
    """

    content_listed = False  # see the module docstring

    def __init__(self, *, database_url: str, schema: str | None = None) -> None:
        self.database_url = database_url
        self.engine = make_engine(database_url)
        if self.engine.dialect.name != "postgresql":
            raise ConfigError(f"legacy-postgres needs PostgreSQL, not {redact(database_url)}")
        self.schema = schema
        self.person, self.warrant, self.nationality = _tables(schema)
        self._verified = False
        # Down at startup: checked on the first write instead, which the adapter retries.
        with contextlib.suppress(LocalSystemUnavailable):
            self._verify()

        wp = self.person
        stmt = pg_insert(wp)
        newer = wp.c.interpol_revision < stmt.excluded.interpol_revision
        # Only a cancel is final; a record withdrawn as no longer addressed may come back.
        not_cancelled = or_(wp.c.record_state != WITHDRAWN, wp.c.withdrawn_reason == NOT_ADDRESSED)
        self._upsert_active = stmt.on_conflict_do_update(
            index_elements=[wp.c.wp_ref],
            set_={c.name: stmt.excluded[c.name] for c in wp.c if c.name != "wp_ref"},
            where=and_(newer, not_cancelled),
        ).returning(wp.c.wp_ref)
        withdrawn = ("record_state", "interpol_revision", "withdrawn_reason", "last_change")
        self._upsert_withdrawn = stmt.on_conflict_do_update(
            index_elements=[wp.c.wp_ref],
            set_={name: stmt.excluded[name] for name in withdrawn},
            # or the same revision over an active record: never so in the ordinary flow (a
            # revision is one event), only when someone set a cancelled record back to active
            where=or_(
                newer,
                and_(
                    wp.c.interpol_revision == stmt.excluded.interpol_revision,
                    wp.c.record_state == ACTIVE,
                ),
            ),
        )
        self._upsert_unlisted = stmt.on_conflict_do_update(
            index_elements=[wp.c.wp_ref],
            set_={name: stmt.excluded[name] for name in withdrawn},
            where=and_(newer, not_cancelled),
        )

    def _verify(self) -> None:
        """Raise ConfigError naming the first table or column the bureau's schema lacks."""
        if self._verified:
            return
        where = f"schema {self.schema!r}" if self.schema else "the default schema"
        with translate_errors(str(self.engine.url)), self.engine.connect() as conn:
            found = inspect(conn)
            for table in (self.person, self.warrant, self.nationality):
                if not found.has_table(table.name, schema=self.schema):
                    raise ConfigError(f"legacy table {table.name!r} not found in {where}")
                have = {c["name"] for c in found.get_columns(table.name, schema=self.schema)}
                missing = sorted(set(table.c.keys()) - have)
                if missing:
                    raise ConfigError(
                        f"legacy table {table.name!r} lacks columns: {', '.join(missing)}"
                    )
        self._verified = True

    def write(self, notices: Sequence[NoticeEvent]) -> None:
        """Upsert each notice's person row; replace its warrants and nationalities."""
        latest = _latest(notices)
        if not latest:
            return
        self._verify()
        now = utcnow()
        people = [_person_row(e, now) for e in latest]
        with transaction(self.engine) as conn:
            changed = set(conn.execute(self._upsert_active, people).scalars())
            if not changed:
                return  # every one was stale or withdrawn: nothing else may change
            children = ((self.warrant, _warrant_rows), (self.nationality, _nationality_rows))
            for table, rows_of in children:
                conn.execute(delete(table).where(table.c.wp_ref.in_(changed)))
                rows = [r for e in latest if e.notice_id in changed for r in rows_of(e)]
                if rows:
                    conn.execute(table.insert(), rows)

    def withdraw(self, cancels: Sequence[NoticeEvent]) -> None:
        """Mark records withdrawn; a notice never had becomes a withdrawn row without a person."""
        latest = _latest(cancels)
        if not latest:
            return
        self._verify()
        now = utcnow()
        rows = [
            {
                "wp_ref": e.notice_id,
                "requesting_state": e.requesting_country,
                "record_state": WITHDRAWN,
                "interpol_revision": e.version,
                "withdrawn_reason": e.reason,
                "last_change": now,
            }
            for e in latest
        ]
        final = [r for r in rows if r["withdrawn_reason"] != NOT_ADDRESSED]
        unlisted = [r for r in rows if r["withdrawn_reason"] == NOT_ADDRESSED]
        with transaction(self.engine) as conn:
            if final:
                conn.execute(self._upsert_withdrawn, final)
            if unlisted:
                conn.execute(self._upsert_unlisted, unlisted)

    def entries(self) -> Iterator[Entry]:
        """Every record's revision and state (content ``""``: see the module docstring)."""
        self._verify()
        wp = self.person
        query = select(wp.c.wp_ref, wp.c.interpol_revision, wp.c.record_state)
        with translate_errors(str(self.engine.url)), self.engine.connect() as conn:
            for ref, revision, state in conn.execution_options(yield_per=5000).execute(query):
                yield Entry(ref, revision, "ACTIVE" if state == ACTIVE else "WITHDRAWN", "")

    def ledger_url(self) -> str:
        """The bureau's own database: the ledger commits beside the records."""
        return self.database_url

    def ledger_schema(self) -> str | None:
        return self.schema

    def health(self) -> Health:
        try:
            with translate_errors(str(self.engine.url)), self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # health never raises: whatever failed is the answer
            return Health(False, str(exc))
        return Health(True)

    def close(self) -> None:
        self.engine.dispose()


def _latest(events: Sequence[NoticeEvent]) -> list[NoticeEvent]:
    """One event per notice, its highest version (one upsert may touch a row only once), in
    notice order, so that concurrent writers lock rows in the same order and do not deadlock."""
    best: dict[str, NoticeEvent] = {}
    for e in events:
        held = best.get(e.notice_id)
        if held is None or held.version < e.version:
            best[e.notice_id] = e
    return sorted(best.values(), key=lambda e: e.notice_id)


def _person(event: NoticeEvent) -> Person:
    if event.person is None:
        raise LocalSystemRejected(f"notice {event.notice_id} v{event.version} has no person")
    return event.person


def _person_row(event: NoticeEvent, now: datetime) -> dict[str, Any]:
    p = _person(event)
    return {
        "wp_ref": event.notice_id,
        "surname": p.name,
        "given_names": p.forename,
        "birth_date_text": p.date_of_birth.replace("/", "-") if p.date_of_birth else None,
        "birth_place": p.place_of_birth,
        "gender": p.sex_id if p.sex_id in ("M", "F") else None,
        "birth_country": p.country_of_birth_id,
        "requesting_state": event.requesting_country,
        # round, not int: 1.15 m * 100 is 114.999... in binary floating point.
        "height_cm": round(p.height * 100) if p.height is not None else None,
        # The column rounds to one decimal; str() keeps the decimal the sender wrote.
        "weight_kg": Decimal(str(p.weight)) if p.weight is not None else None,
        "marks": p.distinguishing_marks,
        "record_state": ACTIVE,
        "interpol_revision": event.version,
        "last_change": now,
        "withdrawn_reason": None,
    }


def _warrant_rows(event: NoticeEvent) -> list[dict[str, Any]]:
    return [
        {
            "wp_ref": event.notice_id,
            "seq": seq,
            "issuing_state": w.issuing_country_id,
            "offence": w.charge,
            "offence_en": w.charge_translation,
        }
        for seq, w in enumerate(_person(event).arrest_warrants, start=1)
    ]


def _nationality_rows(event: NoticeEvent) -> list[dict[str, Any]]:
    # The legacy key is (wp_ref, country): a nationality listed twice is stored once. The
    # schema has no "unknown": no row is how it says "no nationality on record", for both.
    countries = dict.fromkeys(_person(event).nationalities or ())
    return [{"wp_ref": event.notice_id, "country": c} for c in countries]
