"""Alembic's environment for notice-bus: run by :mod:`notice_bus.runtime.migrations` with a
connection in ``config.attributes`` (inside the caller's transaction), or by the ``alembic``
command with ``-x role=local|hq|tracker`` and ``sqlalchemy.url`` set."""

from __future__ import annotations

from alembic import context
from sqlalchemy import MetaData, create_engine

from notice_bus.runtime.migrations import ROLES, load_roles, version_table

config = context.config
role: str = config.attributes.get("role") or context.get_x_argument(as_dictionary=True).get(
    "role", ""
)
if role not in load_roles():
    raise SystemExit(f"notice-bus migrations: role must be one of {', '.join(ROLES)}")
target = MetaData()
for table in ROLES[role]:
    table.to_metadata(target)


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target,
        version_table=version_table(role),
        # SQLite alters a column only by copying its table: batch mode does that.
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as conn:
        _run(conn)
