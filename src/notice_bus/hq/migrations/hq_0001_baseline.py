"""Baseline of the hq role: hq_notice, hq_outbox and hq_version, as ``create_all`` of
release 0.1.0 made them before migrations existed. Frozen: later changes are later revisions,
never edits here.

Revision ID: hq_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "hq_0001"
down_revision: str | None = None
branch_labels = None
depends_on = None
AUTO = True


def upgrade() -> None:
    op.create_table(
        "hq_notice",
        sa.Column("notice_id", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("requesting_country", sa.String(length=2), nullable=False),
        sa.Column("target_countries", sa.JSON(), nullable=False),
        sa.Column("person", sa.JSON(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("notice_id"),
    )
    op.create_table(
        "hq_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("topic", sa.String(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_hq_outbox_key_topic", "hq_outbox", ["key", "topic"], unique=False)
    op.create_index("ix_hq_outbox_pending", "hq_outbox", ["sent_at", "id"], unique=False)
    op.create_table(
        "hq_version",
        sa.Column("notice_id", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("notice_id", "version"),
    )


def downgrade() -> None:
    op.drop_table("hq_version")
    op.drop_index("ix_hq_outbox_pending", table_name="hq_outbox")
    op.drop_index("ix_hq_outbox_key_topic", table_name="hq_outbox")
    op.drop_table("hq_outbox")
    op.drop_table("hq_notice")
