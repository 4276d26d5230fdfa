"""The bureaus' copy checks, as the tracker reads them from ``acks.CC`` (header ``nb-kind:
copy-check``): ``tracker_copy_check``, one row per check (country, manifest, the bureau's
time), for the report's copy status, the escalation of a copy that drifted and the metrics.

A new table only: the previous release's tracker never reads or writes it, so it is safe to
apply on start.

Revision ID: tracker_0004
Revises: tracker_0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "tracker_0004"
down_revision = "tracker_0003"
branch_labels = None
depends_on = None
AUTO = True

TABLE = "tracker_copy_check"
INDEX = "ix_copy_check_country_broker_at"


def upgrade() -> None:
    # A database of release 0.1.0 (no version table) gets the head's missing tables from
    # create_all before it is stamped as the baseline and upgraded: this one may be there.
    if sa.inspect(op.get_bind()).has_table(TABLE):
        return
    op.create_table(
        TABLE,
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("manifest_id", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("broker_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("held", sa.Integer(), nullable=False),
        sa.Column("expected", sa.Integer(), nullable=False),
        sa.Column("missing", sa.Integer(), nullable=False),
        sa.Column("extra", sa.Integer(), nullable=False),
        sa.Column("stale", sa.Integer(), nullable=False),
        sa.Column("resurrected", sa.Integer(), nullable=False),
        sa.Column("altered", sa.Integer(), nullable=False),
        sa.Column("mended", sa.Integer(), nullable=False),
        sa.Column("examples", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("country", "manifest_id", "at"),
    )
    op.create_index(INDEX, TABLE, ["country", "broker_at"], unique=False)


def downgrade() -> None:
    op.drop_index(INDEX, table_name=TABLE)
    op.drop_table(TABLE)
