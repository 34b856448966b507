"""Pooled connections that died with a PostgreSQL restart cost no request an error.

Connections are not pinged on checkout (a ping is three round trips with asyncpg); the
transaction's first statement (binding the tenant, the operator or no one) is the check, and
a transaction whose first statement finds its connection dead is opened once more.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from services.kit import db
from services.kit.stack import PostgresServer, free_port


async def test_transactions_survive_a_postgres_restart(tmp_path: Path) -> None:
    server = PostgresServer(tmp_path / "pg", free_port(), fast=True)
    server.start()
    engine = db.create_engine(server.url, pool_size=3, max_overflow=0)
    try:

        async def warm() -> None:  # three pooled connections, all alive
            async with (
                db.tenant_transaction(engine, "a") as one,
                db.global_transaction(engine) as two,
                db.platform_transaction(engine) as three,
            ):
                for connection in (one, two, three):
                    await connection.execute(text("SELECT 1"))

        await warm()
        server.stop()
        server.start()  # every pooled connection is now dead
        async with db.tenant_transaction(engine, "a") as connection:
            found = await connection.scalar(text("SELECT current_setting('app.tenant_id')"))
        assert found == "a"
        async with db.global_transaction(engine) as connection:
            assert await connection.scalar(text("SELECT current_setting('app.tenant_id')")) == ""
        async with db.platform_transaction(engine) as connection:
            assert await connection.scalar(text("SELECT 1")) == 1
        await warm()
    finally:
        await engine.dispose()
        server.stop()


async def test_a_server_that_stays_down_is_still_an_error(tmp_path: Path) -> None:
    server = PostgresServer(tmp_path / "pg", free_port(), fast=True)
    server.start()
    engine = db.create_engine(server.url, pool_size=1, max_overflow=0)
    try:
        async with db.tenant_transaction(engine, "a") as connection:
            await connection.execute(text("SELECT 1"))
        server.stop()
        with pytest.raises(ConnectionRefusedError):
            async with db.tenant_transaction(engine, "a") as connection:
                await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
        server.stop()
