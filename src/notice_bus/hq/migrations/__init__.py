"""Alembic revisions of the hq role's tables (one linear history per role)."""
