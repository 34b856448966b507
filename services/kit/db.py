"""PostgreSQL access for services: one async engine, transactions bound to a tenant.

Every tenant-scoped transaction starts with ``set_config('app.tenant_id', …, true)``: the
setting ends with the transaction, so a pooled connection never carries a tenant into the
next request, and row-level security policies see exactly one tenant. A connection used
without a tenant sees no tenant rows at all.

Every transaction here is opened by one round trip: ``BEGIN`` and that ``set_config`` sent
together as a simple query, on a connection SQLAlchemy treats as autocommit (so it issues
no ``BEGIN`` of its own); ``COMMIT`` or ``ROLLBACK`` ends it, and a connection somehow left
inside a transaction is closed rather than pooled. Pooled connections are not pinged when
checked out (asyncpg's ping is BEGIN, a query and ROLLBACK: three round trips): the opening
round trip doubles as the check. When it finds the connection dead (the server restarted, a
proxy dropped it), that connection is discarded and the transaction opened on the next one,
and on a new one once the idle ones are used up. Nothing ran in a dead one, so nothing
repeats.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import QueuePool

from services.kit import errors
from supportmesh.common.v1 import errors_pb2

_BEGIN_TENANT = "BEGIN; SELECT set_config('app.tenant_id', {}, true)"
_BEGIN_ADMIN = "BEGIN; SELECT set_config('app.platform_admin', 'on', true)"
_BEGIN_NO_TENANT = "BEGIN; SELECT set_config('app.tenant_id', '', true)"
# What a dead pooled connection raises on its first statement (the server restarted, a
# proxy dropped it): the transaction is opened once more, on a new connection.
_LOST = (
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.InterfaceError,
    ConnectionError,
)


def _literal(value: str) -> str:
    """``value`` as an escaped SQL string literal, whatever ``standard_conforming_strings``."""
    if "\x00" in value:
        raise errors.InvalidArgument("tenant id is not valid", field="tenant_id")
    return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


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


async def _open(
    engine: AsyncEngine, begin: str
) -> tuple[AbstractAsyncContextManager[AsyncConnection], AsyncConnection, asyncpg.Connection]:
    """A checked-out connection in a transaction begun by ``begin``, skipping dead ones."""
    # Each dead pooled connection found is dropped, so past the idle ones a new one is made.
    pool = engine.sync_engine.pool
    attempts = 2 + (pool.checkedin() if isinstance(pool, QueuePool) else 0)
    for attempt in range(1, attempts + 1):
        context: AbstractAsyncContextManager[AsyncConnection] = engine.connect()
        connection = await context.__aenter__()
        raw: asyncpg.Connection | None = None
        try:
            # SQLAlchemy then leaves BEGIN and COMMIT to us: BEGIN travels with the statement
            # that binds the transaction, in one round trip (the simple query protocol).
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            raw = (await connection.get_raw_connection()).driver_connection
            assert isinstance(raw, asyncpg.Connection)
            await raw.execute(begin)
        except BaseException as error:
            lost = isinstance(error, _LOST)
            # BEGIN may have run before its set_config failed: never pool an open transaction.
            opened = raw is not None and not raw.is_closed() and raw.is_in_transaction()
            if lost or opened or not isinstance(error, Exception):
                await connection.invalidate()
            await context.__aexit__(type(error), error, error.__traceback__)
            if attempt < attempts and lost:
                continue
            raise
        return context, connection, raw
    raise AssertionError("unreachable")  # pragma: no cover


async def _end(connection: AsyncConnection, raw: asyncpg.Connection, statement: str) -> None:
    """COMMIT or ROLLBACK; a connection left inside a transaction never returns to the pool."""
    try:
        await raw.execute(statement)
    finally:
        if not connection.invalidated and (raw.is_closed() or raw.is_in_transaction()):
            await connection.invalidate()


@asynccontextmanager
async def _transaction(engine: AsyncEngine, begin: str) -> AsyncIterator[AsyncConnection]:
    """A transaction whose first statement is ``begin`` (BEGIN and a ``set_config``)."""
    context, connection, raw = await _open(engine, begin)
    try:
        try:
            yield connection
        except BaseException:
            with contextlib.suppress(Exception):  # the error that ended it is the one to see
                await _end(connection, raw, "ROLLBACK")
            raise
        await _end(connection, raw, "COMMIT")
    finally:
        await context.__aexit__(None, None, None)


@asynccontextmanager
async def tenant_transaction(engine: AsyncEngine, tenant_id: str) -> AsyncIterator[AsyncConnection]:
    """A transaction in which row-level security admits only ``tenant_id``'s rows."""
    if not tenant_id:
        raise errors.Unauthenticated(
            "no tenant for this transaction", reason=errors_pb2.ERROR_REASON_TENANT_CONTEXT_MISSING
        )
    async with _transaction(engine, _BEGIN_TENANT.format(_literal(tenant_id))) as connection:
        yield connection


@asynccontextmanager
async def platform_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction for the platform operator: every tenant row of ``tenants`` is visible."""
    async with _transaction(engine, _BEGIN_ADMIN) as connection:
        yield connection


@asynccontextmanager
async def global_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction with no tenant: platform-wide tables only (plans, policy versions …)."""
    async with _transaction(engine, _BEGIN_NO_TENANT) as connection:
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
