"""PostgreSQL access for services: one async engine, transactions bound to a tenant.

Every tenant-scoped transaction starts with ``set_config('app.tenant_id', …, true)``: the
setting ends with the transaction, so a pooled connection never carries a tenant into the
next request, and row-level security policies see exactly one tenant. A connection used
without a tenant sees no tenant rows at all.

Pooled connections are not pinged when checked out (asyncpg's ping is BEGIN, a query and
ROLLBACK: three round trips per transaction). The first statement of every transaction here
binds who it runs for, and it doubles as the check: when it finds the connection dead (the
server restarted, a proxy dropped it), SQLAlchemy invalidates the pool and the transaction
is opened once more on a new connection. Nothing ran in the dead one, so nothing repeats.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import asyncpg
from sqlalchemy import TextClause, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from services.kit import errors
from supportmesh.common.v1 import errors_pb2

_SET_TENANT = text("SELECT set_config('app.tenant_id', :tenant, true)")
_SET_ADMIN = text("SELECT set_config('app.platform_admin', 'on', true)")
_NO_TENANT = text("SELECT set_config('app.tenant_id', '', true)")


def async_url(url: str) -> str:
    """The SQLAlchemy asyncpg form of a ``postgresql://`` URL."""
    return make_url(url).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def create_engine(url: str, *, pool_size: int = 10, max_overflow: int = 10) -> AsyncEngine:
    """An async engine over asyncpg with a bounded pool (see the module docstring on pings)."""
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_recycle=1800,
    )


@asynccontextmanager
async def _transaction(
    engine: AsyncEngine, first: TextClause, params: Mapping[str, str] | None = None
) -> AsyncIterator[AsyncConnection]:
    """``engine.begin()`` whose first statement is ``first``, reopened once on a dead connection."""
    for attempt in (1, 2):
        context: AbstractAsyncContextManager[AsyncConnection] = engine.begin()
        connection = await context.__aenter__()
        try:
            await connection.execute(first, dict(params or {}))
        except DBAPIError as error:
            await context.__aexit__(type(error), error, error.__traceback__)
            if attempt == 1 and error.connection_invalidated:
                continue
            raise
        break
    async with _entered(context):
        yield connection


@asynccontextmanager
async def _entered(
    context: AbstractAsyncContextManager[AsyncConnection],
) -> AsyncIterator[None]:
    """Leave an already entered ``context`` the way ``async with`` would."""
    try:
        yield
    except BaseException as error:
        if not await context.__aexit__(type(error), error, error.__traceback__):
            raise
    else:
        await context.__aexit__(None, None, None)


@asynccontextmanager
async def tenant_transaction(engine: AsyncEngine, tenant_id: str) -> AsyncIterator[AsyncConnection]:
    """A transaction in which row-level security admits only ``tenant_id``'s rows."""
    if not tenant_id:
        raise errors.Unauthenticated(
            "no tenant for this transaction", reason=errors_pb2.ERROR_REASON_TENANT_CONTEXT_MISSING
        )
    async with _transaction(engine, _SET_TENANT, {"tenant": tenant_id}) as connection:
        yield connection


@asynccontextmanager
async def platform_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction for the platform operator: every tenant row of ``tenants`` is visible."""
    async with _transaction(engine, _SET_ADMIN) as connection:
        yield connection


@asynccontextmanager
async def global_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction with no tenant: platform-wide tables only (plans, policy versions …)."""
    async with _transaction(engine, _NO_TENANT) as connection:
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
