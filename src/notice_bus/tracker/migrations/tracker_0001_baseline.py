"""Baseline of the tracker role: the tracker_* tables, as ``create_all`` of release 0.1.0
made them before migrations existed. Frozen: later changes are later revisions, never edits
here.

Revision ID: tracker_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "tracker_0001"
down_revision: str | None = None
branch_labels = None
depends_on = None
AUTO = True


def upgrade() -> None:
    op.create_table(
        "tracker_ack",
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("notice_id", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("position", sa.String(length=32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("broker_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("adapter_id", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("country", "notice_id", "version", "status", "position"),
    )
    op.create_index("ix_ack_broker_at", "tracker_ack", ["broker_at"], unique=False)
    op.create_table(
        "tracker_group_sample",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_offset", sa.Integer(), nullable=False),
        sa.Column("committed", sa.Integer(), nullable=True),
        sa.Column("members", sa.Integer(), nullable=False),
        sa.Column("time_lag_s", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_group_sample_country_at", "tracker_group_sample", ["country", "at"], unique=False
    )
    op.create_table(
        "tracker_incident",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("open_sent", sa.Boolean(), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("close_sent", sa.Boolean(), nullable=False),
        sa.Column("detail", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_tracker_incident_country"), "tracker_incident", ["country"], unique=False
    )
    op.create_table(
        "tracker_quarantine",
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("broker_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("topic", "partition", "offset"),
    )
    op.create_table(
        "tracker_reminder",
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("notice_id", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("country", "notice_id", "kind"),
    )
    op.create_table(
        "tracker_response",
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("notice_id", sa.String(length=16), nullable=False),
        sa.Column("answer", sa.String(length=12), nullable=False),
        sa.Column("text", sa.String(), nullable=True),
        sa.Column("responder", sa.String(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("broker_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("country", "notice_id", "answer"),
    )
    op.create_table(
        "tracker_sent",
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("notice_id", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("broker_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rejected", sa.Boolean(), nullable=False),
        sa.Column("superseded", sa.Boolean(), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("country", "notice_id", "version"),
    )
    op.create_index(
        "ix_sent_position", "tracker_sent", ["country", "partition", "offset"], unique=False
    )
    op.create_index(
        "ix_sent_waiting",
        "tracker_sent",
        ["country", "broker_at"],
        unique=False,
        postgresql_where=sa.text("recorded_at IS NULL AND NOT rejected"),
        sqlite_where=sa.text("recorded_at IS NULL AND NOT rejected"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_sent_waiting",
        table_name="tracker_sent",
        postgresql_where=sa.text("recorded_at IS NULL AND NOT rejected"),
        sqlite_where=sa.text("recorded_at IS NULL AND NOT rejected"),
    )
    op.drop_index("ix_sent_position", table_name="tracker_sent")
    op.drop_table("tracker_sent")
    op.drop_table("tracker_response")
    op.drop_table("tracker_reminder")
    op.drop_table("tracker_quarantine")
    op.drop_index(op.f("ix_tracker_incident_country"), table_name="tracker_incident")
    op.drop_table("tracker_incident")
    op.drop_index("ix_group_sample_country_at", table_name="tracker_group_sample")
    op.drop_table("tracker_group_sample")
    op.drop_index("ix_ack_broker_at", table_name="tracker_ack")
    op.drop_table("tracker_ack")
