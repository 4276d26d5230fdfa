"""Requests and the audit trail: ``hq_request`` (bureaus' requests, their screening and
decision) and ``hq_audit`` (the hash-chained, append-only trail).

New tables only: the previous release's HQ never reads or writes them, so it is safe to apply
on start.

Revision ID: hq_0002
Revises: hq_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "hq_0002"
down_revision = "hq_0001"
branch_labels = None
depends_on = None
AUTO = True


def upgrade() -> None:
    # A database of release 0.1.0 (no version table) gets the head's missing tables from
    # create_all before it is stamped as the baseline and upgraded: they may be there.
    have = sa.inspect(op.get_bind())
    if not have.has_table("hq_request"):
        op.create_table(
            "hq_request",
            sa.Column("request_id", sa.String(length=64), nullable=False),
            sa.Column("source", sa.String(length=300), nullable=False),
            sa.Column("country", sa.String(length=2), nullable=False),
            sa.Column("claimed_country", sa.String(length=2), nullable=True),
            sa.Column("notice_id", sa.String(length=16), nullable=False),
            sa.Column("draft", sa.JSON(), nullable=False),
            sa.Column("facts", sa.String(), nullable=True),
            sa.Column("person_status", sa.String(length=100), nullable=True),
            sa.Column("findings", sa.JSON(), nullable=False),
            sa.Column("status", sa.String(length=10), nullable=False),
            sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("decided_by", sa.String(length=100), nullable=True),
            sa.Column("reason", sa.String(), nullable=True),
            sa.PrimaryKeyConstraint("request_id"),
            sa.UniqueConstraint("source"),
        )
        op.create_index("ix_hq_request_status", "hq_request", ["status", "received_at"])
        op.create_index("ix_hq_request_notice_id", "hq_request", ["notice_id"])
    if not have.has_table("hq_audit"):
        op.create_table(
            "hq_audit",
            sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
            sa.Column("at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("kind", sa.String(length=16), nullable=False),
            sa.Column("actor", sa.String(length=100), nullable=False),
            sa.Column("request_id", sa.String(length=64), nullable=True),
            sa.Column("notice_id", sa.String(length=16), nullable=True),
            sa.Column("detail", sa.JSON(), nullable=False),
            sa.Column("prev_hash", sa.String(length=64), nullable=False),
            sa.Column("hash", sa.String(length=64), nullable=False),
            sa.PrimaryKeyConstraint("seq"),
        )
        op.create_index("ix_hq_audit_notice_id", "hq_audit", ["notice_id"])


def downgrade() -> None:
    op.drop_index("ix_hq_audit_notice_id", table_name="hq_audit")
    op.drop_table("hq_audit")
    op.drop_index("ix_hq_request_notice_id", table_name="hq_request")
    op.drop_index("ix_hq_request_status", table_name="hq_request")
    op.drop_table("hq_request")
