"""PostgreSQL helpers shared by the services, the data plane and the dev stack."""

from __future__ import annotations

import asyncpg
from sqlalchemy.engine import make_url


def async_url(url: str) -> str:
    """The SQLAlchemy asyncpg form of a ``postgresql://`` URL."""
    return make_url(url).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


async def ensure_database(admin_url: str, name: str) -> None:
    """Create database ``name`` when it does not exist (``admin_url`` may point anywhere)."""
    connection = await asyncpg.connect(admin_url)
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
