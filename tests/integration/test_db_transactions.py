"""The kit's transactions: one round trip opens them, and none leaks into the next checkout.

``BEGIN`` travels with the ``set_config`` that binds the tenant, outside SQLAlchemy's own
transaction handling, so these check what SQLAlchemy used to guarantee: a failed or
cancelled transaction is rolled back, and a pooled connection never carries a transaction
or a tenant into the next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import db
from services.kit.stack import PostgresServer, free_port

TENANT = text("SELECT current_setting('app.tenant_id', true)")
IN_TRANSACTION = text("SELECT now() = statement_timestamp()")  # false inside a transaction


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    found = PostgresServer(Path(tmp_path_factory.mktemp("pg")), free_port(), fast=True)
    found.start()
    try:
        yield found
    finally:
        found.stop()


@pytest.fixture
async def engine(server: PostgresServer) -> AsyncIterator[AsyncEngine]:
    """One pooled connection, so every transaction reuses the one before it."""
    built = db.create_engine(server.url, pool_size=1, max_overflow=0)
    async with db.global_transaction(built) as connection:
        await connection.execute(text("CREATE TABLE IF NOT EXISTS notes (body text)"))
        await connection.execute(text("TRUNCATE notes"))
    try:
        yield built
    finally:
        await built.dispose()


async def notes(engine: AsyncEngine) -> list[str]:
    async with db.global_transaction(engine) as connection:
        return list((await connection.execute(text("SELECT body FROM notes"))).scalars())


async def test_statements_share_one_transaction_that_commits(engine: AsyncEngine) -> None:
    async with db.tenant_transaction(engine, "t1") as connection:
        assert await connection.scalar(IN_TRANSACTION) is False
        await connection.execute(text("INSERT INTO notes VALUES ('kept')"))
        assert await connection.scalar(TENANT) == "t1"
    assert await notes(engine) == ["kept"]


async def insert_then(engine: AsyncEngine, body: str, failing: str) -> None:
    """A transaction that inserts ``body`` and then runs ``failing`` (or raises, for '')."""
    async with db.tenant_transaction(engine, "t1") as connection:
        await connection.execute(text("INSERT INTO notes VALUES (:body)"), {"body": body})
        if not failing:
            raise RuntimeError("the caller failed")
        await connection.execute(text(failing))


async def test_an_error_rolls_back_and_the_connection_is_clean(engine: AsyncEngine) -> None:
    with pytest.raises(RuntimeError):
        await insert_then(engine, "lost", "")
    with pytest.raises(Exception, match="division by zero"):
        await insert_then(engine, "lost too", "SELECT 1 / 0")
    assert await notes(engine) == []
    async with db.global_transaction(engine) as connection:
        assert await connection.scalar(TENANT) == ""


async def test_a_cancelled_transaction_leaves_nothing_behind(engine: AsyncEngine) -> None:
    async def slow() -> None:
        async with db.tenant_transaction(engine, "t1") as connection:
            await connection.execute(text("INSERT INTO notes VALUES ('cancelled')"))
            await connection.execute(text("SELECT pg_sleep(5)"))

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(slow(), timeout=0.3)
    async with db.tenant_transaction(engine, "t2") as connection:
        assert await connection.scalar(TENANT) == "t2"
    assert await notes(engine) == []


async def test_a_tenant_id_is_bound_as_a_value(engine: AsyncEngine) -> None:
    odd = "t\\'); INSERT INTO notes VALUES ('injected'); --"
    async with db.tenant_transaction(engine, odd) as connection:
        assert await connection.scalar(TENANT) == odd
    assert await notes(engine) == []
