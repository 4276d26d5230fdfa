"""Security events: acknowledgements and answers whose MAC failed, in their own table
``tracker_security_event``, never among the deliveries.

A new table only: the previous release's tracker never reads or writes it, so it is safe to
apply on start.

Revision ID: tracker_0002
Revises: tracker_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "tracker_0002"
down_revision = "tracker_0001"
branch_labels = None
depends_on = None
AUTO = True

TABLE = "tracker_security_event"
INDEX = "ix_security_event_country_broker_at"


def upgrade() -> None:
    # A database of release 0.1.0 (no version table) gets the head's missing tables from
    # create_all before it is stamped as the baseline and upgraded: this one may be there.
    if sa.inspect(op.get_bind()).has_table(TABLE):
        return
    op.create_table(
        TABLE,
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("broker_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("topic", "partition", "offset"),
    )
    op.create_index(INDEX, TABLE, ["country", "broker_at"], unique=False)


def downgrade() -> None:
    op.drop_index(INDEX, table_name=TABLE)
    op.drop_table(TABLE)
