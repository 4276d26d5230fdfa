"""Schema migrations with Alembic, one linear history per role: ``local`` (a country's SQL sink:
``red_notice`` and its neighbours), ``hq`` and ``tracker``.

Roles may share a database (a demo's single SQLite file, a hub's country schemas on one
PostgreSQL server), so each keeps its revision in its own table, ``alembic_version_<role>``.

A database is brought to the head revision by :func:`ensure_current` whenever a role opens it
(``make_engine`` with the role's tables, where ``create_all`` used to run), and by ``notice-bus
db upgrade`` (:func:`upgrade_database`):

- an empty database gets the head's tables directly (``create_all``) and is stamped head;
- a database made by ``create_all`` before migrations existed (the role's tables, no version
  table) is stamped as the baseline, then upgraded;
- a database already at the head costs one query, and does not import Alembic.

A revision whose module says ``AUTO = False`` (older code must not run on its result) is not
applied on start: starting then fails, and an operator runs ``notice-bus db upgrade`` once
the older instances are stopped.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Engine,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    inspect,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from notice_bus.errors import ConfigError

#: Each role's tables, head revision (a test checks it against the revision files, so that
#: opening an up-to-date database needs no parsing of them), the revision ``create_all`` of
#: release 0.1.0 made before migrations existed, and the folder of its revisions: registered
#: by the role's tables module (:func:`register`).
ROLES: dict[str, list[Table]] = {}
HEADS: dict[str, str] = {}
BASELINES: dict[str, str] = {}
_VERSIONS: dict[str, Path] = {}
#: The module that registers each role, in the order ``db upgrade`` takes them. Imported by
#: name when every role is needed: the runtime imports no role's code.
_ROLE_MODULES = {
    "local": "notice_bus.bureau.sinks.tables",
    "hq": "notice_bus.hq.tables",
    "tracker": "notice_bus.tracker.tables",
}


def register(role: str, tables: list[Table], *, head: str, baseline: str, here: str) -> None:
    """Declare ``role``'s tables, called by the module that defines them (``here``, its
    ``__file__``); their revisions are in the ``migrations`` folder beside it."""
    ROLES[role], HEADS[role], BASELINES[role] = tables, head, baseline
    _VERSIONS[role] = Path(here).resolve().parent / "migrations"


def load_roles() -> list[str]:
    """Register every role (importing its tables module); returns them in order."""
    for module in _ROLE_MODULES.values():
        importlib.import_module(module)
    return list(_ROLE_MODULES)


def versions(role: str) -> Path:
    """The folder of ``role``'s revision files."""
    return _VERSIONS[role]


_HERE = Path(__file__).resolve().parent


def version_table(role: str) -> str:
    return f"alembic_version_{role}"


def role_of(tables: Sequence[Any]) -> str | None:
    """The role whose tables are exactly ``tables``, or None."""
    names = {getattr(t, "name", None) for t in tables}
    for role, own in ROLES.items():
        if names == {t.name for t in own}:
            return role
    return None


def ensure_current(engine: Engine, role: str) -> None:
    """Bring ``role``'s tables in ``engine``'s database to the head revision (module docstring).

    Concurrent callers take turns on PostgreSQL (an advisory lock held by the transaction).
    """
    if _current(engine, role) == HEADS[role]:
        return
    from notice_bus.runtime.db import lock_ddl, transaction

    with transaction(engine) as conn:
        lock_ddl(conn)  # then upgrade_connection looks again: another may have done it
        upgrade_connection(conn, role, auto=True)


def upgrade_connection(conn: Connection, role: str, *, auto: bool = False) -> tuple[str, str]:
    """Upgrade ``role`` on ``conn`` (in the caller's transaction); returns the revisions
    before and after (before: ``"none"`` for a database without the role's tables,
    ``"unversioned"`` for one made by ``create_all`` before migrations existed).

    ``auto``: refuse a pending revision that is not safe on start (``AUTO = False``).
    """
    found = inspect(conn)
    if found.has_table(version_table(role)):
        before = current = _current_on(conn, role) or "none"
    else:
        present = {t.name for t in ROLES[role] if found.has_table(t.name)}
        # Tables the previous release made together, so this is either all or none of them;
        # one missing (dropped by hand) is made as create_all always did.
        _create(conn, role)
        # Stamped as Alembic would, without loading Alembic: a hub's first start opens
        # hundreds of new databases.
        _stamp(conn, role, BASELINES[role] if present else HEADS[role])
        if not present:
            return "none", HEADS[role]
        before, current = "unversioned", BASELINES[role]
    if current != HEADS[role]:
        from alembic import command

        config = _config(conn, role)
        if auto:
            _refuse_unsafe(config, role, current)
        command.upgrade(config, HEADS[role])
    return before, HEADS[role]


def upgrade_database(url: str, roles: Sequence[str] = ()) -> list[str]:
    """``notice-bus db upgrade``: upgrade ``roles`` (default: every role found in the database)
    to their heads, whether or not their revisions are safe on start. One line per role."""
    from notice_bus.runtime.db import lock_ddl, make_engine, redact, transaction

    every = load_roles()
    unknown = set(roles) - set(every)
    if unknown:
        raise ConfigError(f"no role {', '.join(sorted(unknown))}; roles: {', '.join(every)}")
    engine = make_engine(url)
    try:
        with transaction(engine) as conn:
            lock_ddl(conn)
            found = inspect(conn)
            todo = list(roles) or [
                r
                for r in every
                if found.has_table(version_table(r))
                or any(found.has_table(t.name) for t in ROLES[r])
            ]
            if not todo:
                raise ConfigError(
                    f"{redact(url)} holds no notice-bus tables; name the role to create: "
                    + ", ".join(f"--role {r}" for r in every)
                )
            lines = []
            for role in todo:
                before, after = upgrade_connection(conn, role)
                state = "up to date" if before == after else f"from {before}"
                lines.append(f"{role}: {after} ({state})")
    finally:
        engine.dispose()
    return lines


def _current(engine: Engine, role: str) -> str | None:
    """The role's revision, or None when there is no version table (or no database yet)."""
    try:
        with engine.connect() as conn:
            return _current_on(conn, role)
    except DBAPIError:  # no version table yet; an outage surfaces again in the upgrade
        return None


def _current_on(conn: Connection, role: str) -> str | None:
    rows = conn.execute(text(f"SELECT version_num FROM {version_table(role)}")).scalars().all()
    return str(rows[0]) if len(rows) == 1 else None


def _stamp(conn: Connection, role: str, revision: str) -> None:
    """Make the version table as Alembic does (``alembic.ddl.impl``) and put ``revision``."""
    table = Table(
        version_table(role),
        MetaData(),
        Column("version_num", String(32), nullable=False),
        PrimaryKeyConstraint("version_num", name=f"{version_table(role)}_pkc"),
    )
    table.create(conn)
    conn.execute(table.insert().values(version_num=revision))


def _create(conn: Connection, role: str) -> None:
    tables = ROLES[role]
    tables[0].metadata.create_all(conn, tables=tables)


def _config(conn: Connection, role: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_HERE))
    config.set_main_option("version_locations", str(_VERSIONS[role]))
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = conn
    config.attributes["role"] = role
    return config


def _refuse_unsafe(config: Any, role: str, current: str) -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(config)
    for rev in script.iterate_revisions(HEADS[role], current):
        if getattr(rev.module, "AUTO", True) is False:
            raise ConfigError(
                f"the {role} tables need revision {rev.revision}, which is not applied on"
                " start: stop the instances of the previous release, then run"
                " `notice-bus db upgrade --database-url URL`"
            )
