"""Baseline of the local role (a country's SQL sink): red_notice, notice_response and
notice_reminder, as ``create_all`` of release 0.1.0 made them before migrations existed.
Frozen: later changes are later revisions, never edits here.

Revision ID: local_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "local_0001"
down_revision: str | None = None
branch_labels = None
depends_on = None
AUTO = True


def upgrade() -> None:
    op.create_table(
        "notice_reminder",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("notice_id", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reminded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("text", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_notice_reminder_notice_id"), "notice_reminder", ["notice_id"], unique=False
    )
    op.create_table(
        "notice_response",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("notice_id", sa.String(length=16), nullable=False),
        sa.Column("answer", sa.String(length=12), nullable=False),
        sa.Column("text", sa.String(), nullable=True),
        sa.Column("responder", sa.String(), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_notice_response_pending", "notice_response", ["sent_at", "id"], unique=False
    )
    op.create_table(
        "red_notice",
        sa.Column("notice_id", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("requesting_country", sa.String(length=2), nullable=False),
        sa.Column("name", sa.String(), nullable=True),
        sa.Column("forename", sa.String(), nullable=True),
        sa.Column("date_of_birth", sa.String(length=10), nullable=True),
        sa.Column("sex_id", sa.String(length=1), nullable=True),
        sa.Column("nationalities", sa.JSON(), nullable=False),
        sa.Column("country_of_birth_id", sa.String(length=2), nullable=True),
        sa.Column("place_of_birth", sa.String(), nullable=True),
        sa.Column("distinguishing_marks", sa.String(), nullable=True),
        sa.Column("height", sa.Float(), nullable=True),
        sa.Column("weight", sa.Float(), nullable=True),
        sa.Column("eyes_colors_id", sa.JSON(), nullable=False),
        sa.Column("hairs_id", sa.JSON(), nullable=False),
        sa.Column("languages_spoken_ids", sa.JSON(), nullable=False),
        sa.Column("arrest_warrants", sa.JSON(), nullable=False),
        sa.Column("images", sa.JSON(), nullable=False),
        sa.Column("withdrawn_reason", sa.String(), nullable=True),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("notice_id"),
    )
    op.create_index(op.f("ix_red_notice_status"), "red_notice", ["status"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_red_notice_status"), table_name="red_notice")
    op.drop_table("red_notice")
    op.drop_index("ix_notice_response_pending", table_name="notice_response")
    op.drop_table("notice_response")
    op.drop_index(op.f("ix_notice_reminder_notice_id"), table_name="notice_reminder")
    op.drop_table("notice_reminder")
