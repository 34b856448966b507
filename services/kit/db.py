"""PostgreSQL access for services: one async engine, transactions bound to a tenant.

Every tenant-scoped transaction starts with ``set_config('app.tenant_id', …, true)``: the
setting ends with the transaction, so a pooled connection never carries a tenant into the
next request, and row-level security policies see exactly one tenant. A connection used
without a tenant sees no tenant rows at all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from services.kit import errors
from supportmesh.common.v1 import errors_pb2

_SET_TENANT = text("SELECT set_config('app.tenant_id', :tenant, true)")
_SET_ADMIN = text("SELECT set_config('app.platform_admin', 'on', true)")


def async_url(url: str) -> str:
    """The SQLAlchemy asyncpg form of a ``postgresql://`` URL."""
    return make_url(url).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def create_engine(url: str, *, pool_size: int = 10, max_overflow: int = 10) -> AsyncEngine:
    """An async engine over asyncpg with a bounded pool and pre-ping."""
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        pool_recycle=1800,
    )


@asynccontextmanager
async def tenant_transaction(engine: AsyncEngine, tenant_id: str) -> AsyncIterator[AsyncConnection]:
    """A transaction in which row-level security admits only ``tenant_id``'s rows."""
    if not tenant_id:
        raise errors.Unauthenticated(
            "no tenant for this transaction", reason=errors_pb2.ERROR_REASON_TENANT_CONTEXT_MISSING
        )
    async with engine.begin() as connection:
        await connection.execute(_SET_TENANT, {"tenant": tenant_id})
        yield connection


@asynccontextmanager
async def platform_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction for the platform operator: every tenant row of ``tenants`` is visible."""
    async with engine.begin() as connection:
        await connection.execute(_SET_ADMIN)
        yield connection


@asynccontextmanager
async def global_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction with no tenant: platform-wide tables only (plans, policy versions …)."""
    async with engine.begin() as connection:
        yield connection


async def ensure_database(admin_url: str, name: str) -> None:
    """Create database ``name`` when it does not exist (``admin_url`` may point anywhere)."""
    connection = await asyncpg.connect(admin_url)
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
