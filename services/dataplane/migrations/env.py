"""Alembic environment: runs migrations over an asyncpg connection as the schema owner."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

OWNER_ROLE = "supportmesh_owner"


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


async def _main() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url must be set"
    engine = create_async_engine(url, poolclass=pool.NullPool)
    async with engine.connect() as connection:
        # One migrator at a time, whoever starts first (several pods, or dev and tests).
        await connection.execute(text("SELECT pg_advisory_lock(4242)"))
        await connection.commit()
        try:
            await connection.run_sync(_run)
            await connection.commit()
        finally:
            await connection.rollback()
            await connection.execute(text("SELECT pg_advisory_unlock(4242)"))
            await connection.commit()
    await engine.dispose()


asyncio.run(_main())
