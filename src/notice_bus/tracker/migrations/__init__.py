"""Alembic revisions of the tracker role's tables (one linear history per role)."""
