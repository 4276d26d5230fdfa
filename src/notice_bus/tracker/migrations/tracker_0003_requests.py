"""HQ's decisions on the bureaus' requests, as the tracker reads them from ``decisions.CC``:
``tracker_request``, one row per request, for HQ's own lag in the report.

A new table only: the previous release's tracker never reads or writes it, so it is safe to
apply on start.

Revision ID: tracker_0003
Revises: tracker_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "tracker_0003"
down_revision = "tracker_0002"
branch_labels = None
depends_on = None
AUTO = True

TABLE = "tracker_request"
INDEX = "ix_request_country_status"


def upgrade() -> None:
    # A database of release 0.1.0 (no version table) gets the head's missing tables from
    # create_all before it is stamped as the baseline and upgraded: this one may be there.
    if sa.inspect(op.get_bind()).has_table(TABLE):
        return
    op.create_table(
        TABLE,
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("notice_id", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(length=100), nullable=True),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("rules", sa.String(), nullable=False),
        sa.Column("broker_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("request_id"),
    )
    op.create_index(INDEX, TABLE, ["country", "status"], unique=False)


def downgrade() -> None:
    op.drop_index(INDEX, table_name=TABLE)
    op.drop_table(TABLE)
