"""Alembic revisions of the local role's tables (one linear history per role)."""
