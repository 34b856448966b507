"""Alembic migrations of the platform's PostgreSQL schema."""
