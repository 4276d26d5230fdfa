"""Unknown lists: the person's lists of ``red_notice`` may be NULL (unknown, INTERPOL's null),
which is not ``[]`` (known to be none). Rows stored before keep ``[]``: what they meant is lost.

Only relaxes NOT NULL, so an adapter of the previous release keeps writing into the upgraded
table (it writes ``[]``): safe to apply on start. On PostgreSQL a catalogue change; SQLite
copies the table (batch mode).

Revision ID: local_0002
Revises: local_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "local_0002"
down_revision = "local_0001"
branch_labels = None
depends_on = None
AUTO = True

LISTS = ("nationalities", "eyes_colors_id", "hairs_id", "languages_spoken_ids", "images")


def upgrade() -> None:
    with op.batch_alter_table("red_notice") as batch:
        for name in LISTS:
            batch.alter_column(name, existing_type=sa.JSON(), nullable=True)


def downgrade() -> None:
    # "Unknown" has no place in the older table: it becomes "none" again, as it was stored.
    for name in LISTS:
        op.execute(sa.text(f"UPDATE red_notice SET {name} = '[]' WHERE {name} IS NULL"))
    with op.batch_alter_table("red_notice") as batch:
        for name in LISTS:
            batch.alter_column(name, existing_type=sa.JSON(), nullable=False)
