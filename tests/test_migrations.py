"""Schema migrations: a database made by the previous release (0.1.0, ``create_all`` without
migrations) with rows in it is upgraded when each role opens it, nothing lost; an empty one
gets the head directly; ``notice-bus db upgrade``; roles sharing a database or a server."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from notice_bus.bureau.sinks.sql import SqlSink
from notice_bus.bureau.sinks.tables import RED_NOTICE
from notice_bus.errors import ConfigError
from notice_bus.hq.tables import HQ_TABLES
from notice_bus.runtime import migrations
from notice_bus.runtime.db import make_engine
from notice_bus.runtime.migrations import BASELINES, HEADS, ROLES, upgrade_database, version_table
from notice_bus.tracker.tables import TRACKER_TABLES
from tests.factories import PERSON, event

SCHEMAS = Path(__file__).parent / "schemas"
ROWS = 3  # per table


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/shared.db"
    factory: Callable[[], str] = request.getfixturevalue("new_postgres_db")
    return factory()


def previous_release(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """The three roles' tables as release 0.1.0 made them (frozen DDL), in one database, with
    rows in every table; returns every table's rows."""
    engine = make_engine(url)
    dialect = engine.dialect.name
    ddl = (SCHEMAS / f"tables_0.1.0_{dialect}.sql").read_text()
    statements = [s for s in ddl.split(";\n") if s.strip().removeprefix("--").strip()]
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql("\n".join(ln for ln in statement.splitlines() if ln[:2] != "--"))
        found = sa.MetaData()
        found.reflect(conn)
        for table in found.sorted_tables:
            conn.execute(sa.insert(table), [_row(table, i) for i in range(ROWS)])
    try:
        return snapshot(engine)
    finally:
        engine.dispose()


def _row(table: sa.Table, i: int) -> dict[str, Any]:
    """Row ``i`` of ``table``: a value of each column's type; NULL in a nullable column of
    every other row."""
    row: dict[str, Any] = {}
    for column in table.c:
        if column.nullable and i % 2 and not column.primary_key:
            row[column.name] = None
            continue
        kind = column.type
        if isinstance(kind, sa.JSON):
            row[column.name] = {"name": f"P{i}", "eyes_colors_id": []} if column.nullable else []
            if column.name in ("nationalities", "languages_spoken_ids"):
                row[column.name] = ["FR", f"X{i}"]
        elif isinstance(kind, sa.Boolean):
            row[column.name] = i % 2 == 0
        elif isinstance(kind, sa.DateTime):
            row[column.name] = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC) + timedelta(seconds=i)
        elif isinstance(kind, sa.Integer):
            row[column.name] = 10 + i
        elif isinstance(kind, sa.Float | sa.Numeric):
            row[column.name] = 1.5 + i
        elif isinstance(kind, sa.LargeBinary):
            row[column.name] = bytes([0, 195, 1, i])
        else:
            length = getattr(kind, "length", None) or 20
            row[column.name] = f"{column.name[:1].upper()}{i}"[:length]
    return row


def snapshot(engine: sa.Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table but the version tables, columns by name, in key order."""
    found = sa.MetaData()
    found.reflect(engine)
    out = {}
    with engine.connect() as conn:
        for name, table in found.tables.items():
            if name.startswith("alembic_version"):
                continue
            cols = sorted(table.c, key=lambda c: c.name)
            key = list(table.primary_key) or cols
            rows = conn.execute(sa.select(*cols).order_by(*key)).all()
            out[name] = [tuple(r) for r in rows]
    return out


def revisions(engine: sa.Engine) -> dict[str, list[str]]:
    with engine.connect() as conn:
        return {
            role: list(
                conn.execute(sa.text(f"SELECT version_num FROM {version_table(role)}")).scalars()
            )
            for role in ROLES
        }


def test_the_heads_and_baselines_named_in_code_are_those_of_the_revision_files() -> None:
    for role in ROLES:
        config = Config()
        config.set_main_option("script_location", str(Path(migrations.__file__).parent))
        config.set_main_option("version_locations", str(migrations.versions(role)))
        config.set_main_option("path_separator", "os")
        script = ScriptDirectory.from_config(config)
        assert script.get_heads() == [HEADS[role]], role
        assert script.get_bases() == [BASELINES[role]], role


def test_a_populated_database_of_the_previous_release_is_upgraded_on_open(url: str) -> None:
    before = previous_release(url)
    assert all(len(rows) == ROWS for rows in before.values()) and len(before) == 13
    # Each role opens it as its code does on start: the tables are found without a version
    # table, stamped as the baseline, then upgraded.
    sink = SqlSink(url)
    make_engine(url, HQ_TABLES).dispose()
    make_engine(url, TRACKER_TABLES).dispose()
    try:
        assert revisions(sink.engine) == {role: [head] for role, head in HEADS.items()}
        after = snapshot(sink.engine)
        for new in (
            "tracker_security_event",
            "tracker_request",
            "tracker_copy_check",
            "hq_request",
            "hq_audit",
        ):
            assert after.pop(new) == []  # made by a later revision, empty
        assert after == before  # nothing lost, nothing changed
        # The upgraded red_notice takes an unknown list, next to the old rows.
        unknown = replace(PERSON, eyes_colors_id=None, nationalities=None)
        sink.add(event("2026/900", person=unknown), 0)
        sink.add(event("N0", 11, person=unknown), 0)  # a newer version of an old row (10)
        sink.flush()
        with sink.engine.connect() as conn:
            rows = {
                r.notice_id: r
                for r in conn.execute(sa.select(RED_NOTICE).order_by(RED_NOTICE.c.notice_id))
            }
        assert rows["2026/900"].eyes_colors_id is None and rows["N0"].nationalities is None
        assert rows["N0"].version == 11 and rows["N1"].nationalities == ["FR", "X1"]
        # Opening it again is one query: nothing to do.
        SqlSink(url).close()
        assert revisions(sink.engine)["local"] == [HEADS["local"]]
    finally:
        sink.close()


def test_an_empty_database_gets_the_head_directly_and_is_stamped(url: str) -> None:
    engine = make_engine(url, TRACKER_TABLES)
    try:
        tables = set(sa.inspect(engine).get_table_names())
        assert {t.name for t in TRACKER_TABLES} | {version_table("tracker")} == tables
        with engine.connect() as conn:
            assert _head_of(conn, "tracker") == [HEADS["tracker"]]
    finally:
        engine.dispose()


# Each process imports, says it is ready, waits for the others, then opens the database.
OPEN_AT_ONCE = """
import sys, time
from pathlib import Path
from notice_bus.runtime.db import make_engine
from notice_bus.tracker.tables import TRACKER_TABLES
url, here, me, count = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
(here / f"ready-{me}").touch()
while len(list(here.glob("ready-*"))) < count:
    time.sleep(0.001)
make_engine(url, TRACKER_TABLES).dispose()
"""


def test_processes_opening_a_new_database_at_once_all_start(url: str, tmp_path: Path) -> None:
    """A tracker and a report started together on a new database: one creates the tables,
    the others wait for it and find them (SQLite's second CREATE used to fail)."""
    count = 3
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AT_ONCE, url, str(tmp_path), str(n), str(count)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for n in range(count)
    ]
    results = [(p.wait(timeout=120), p.communicate()[0]) for p in procs]
    assert [code for code, _ in results] == [0] * count, results
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert _head_of(conn, "tracker") == [HEADS["tracker"]]
    finally:
        engine.dispose()


def _head_of(conn: sa.Connection, role: str) -> list[str]:
    return list(conn.execute(sa.text(f"SELECT version_num FROM {version_table(role)}")).scalars())


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_revisions_from_scratch_make_the_schema_the_code_defines(
    backend: str, tmp_path: Path, new_postgres_db: Callable[[], str]
) -> None:
    from alembic import command

    for role, tables in ROLES.items():  # a database each: the others' tables are not theirs
        url = new_postgres_db() if backend == "postgresql" else f"sqlite:///{tmp_path}/{role}.db"
        engine = make_engine(url)
        try:
            with engine.begin() as conn:
                command.upgrade(migrations._config(conn, role), HEADS[role])
            with engine.connect() as conn:
                wanted = sa.MetaData()
                for t in tables:
                    t.to_metadata(wanted)
                context = MigrationContext.configure(
                    conn, opts={"version_table": version_table(role)}
                )
                assert compare_metadata(context, wanted) == [], role
        finally:
            engine.dispose()


def test_db_upgrade_upgrades_the_roles_it_finds_and_names_what_it_did(url: str) -> None:
    before = previous_release(url)
    assert upgrade_database(url) == [
        "local: local_0002 (from unversioned)",
        "hq: hq_0002 (from unversioned)",
        "tracker: tracker_0004 (from unversioned)",
    ]
    assert upgrade_database(url, ["local"]) == ["local: local_0002 (up to date)"]
    engine = make_engine(url)
    try:
        after = snapshot(engine)
        for new in (
            "tracker_security_event",
            "tracker_request",
            "tracker_copy_check",
            "hq_request",
            "hq_audit",
        ):
            assert after.pop(new) == []  # made by a later revision, empty
        assert after == before
    finally:
        engine.dispose()


def test_db_upgrade_of_an_empty_database_wants_a_role(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/empty.db"
    with pytest.raises(ConfigError, match="--role local"):
        upgrade_database(url)
    assert upgrade_database(url, ["hq"]) == ["hq: hq_0002 (from none)"]
    with pytest.raises(ConfigError, match="no role bogus"):
        upgrade_database(url, ["bogus"])


def test_countries_in_schemas_of_one_postgresql_database_keep_their_own_versions(
    new_postgres_db: Callable[[], str],
) -> None:
    """A hub's countries, each in its own schema (``search_path``), as the benchmark sets
    them: each schema gets its tables and its version table; one previous-release schema is
    upgraded without touching the other."""
    base = new_postgres_db()
    admin = make_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.text("CREATE SCHEMA nb_fr"))
        conn.execute(sa.text("CREATE SCHEMA nb_th"))
    fr, th = (f"{base}?options=-csearch_path%3Dnb_{cc}" for cc in ("fr", "th"))
    previous_release(th)
    SqlSink(fr).close()
    SqlSink(th).close()
    try:
        with admin.connect() as conn:
            versions = {
                schema: list(
                    conn.execute(
                        sa.text(f"SELECT version_num FROM {schema}.alembic_version_local")
                    ).scalars()
                )
                for schema in ("nb_fr", "nb_th")
            }
            rows = conn.execute(sa.text("SELECT count(*) FROM nb_th.red_notice")).scalar_one()
            public = sa.inspect(conn).get_table_names(schema="public")
        assert versions == {"nb_fr": ["local_0002"], "nb_th": ["local_0002"]}
        assert rows == ROWS and public == []
    finally:
        admin.dispose()
