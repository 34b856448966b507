"""Migrations leave a service role that row-level security always applies to."""

from __future__ import annotations

import asyncio

import asyncpg
from alembic.script import ScriptDirectory

from services.dataplane import migrate
from services.kit.devstack import Platform


async def test_service_role_is_neither_superuser_owner_nor_bypassrls(platform: Platform) -> None:
    connection = await asyncpg.connect(platform.database_url)
    try:
        role = await connection.fetchrow(
            "SELECT rolname, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb "
            "FROM pg_roles WHERE rolname = current_user"
        )
        assert role is not None
        assert role["rolname"] == "supportmesh_app"
        assert not any(
            (role["rolsuper"], role["rolbypassrls"], role["rolcreaterole"], role["rolcreatedb"])
        )
        owner = await connection.fetchval(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'supportmesh_owner'"
        )
        assert owner is False
        assert await connection.fetchval("SHOW search_path") == "app, public"
    finally:
        await connection.close()


async def test_migrations_are_at_head_and_rerunning_changes_nothing(platform: Platform) -> None:
    connection = await asyncpg.connect(platform.admin_database_url)
    try:
        before = await connection.fetchval("SELECT version_num FROM alembic_version")
        await asyncio.to_thread(migrate.upgrade, platform.admin_database_url)
        after = await connection.fetchval("SELECT version_num FROM alembic_version")
    finally:
        await connection.close()
    head = ScriptDirectory(str(migrate.MIGRATIONS)).get_current_head()
    assert before == after == head
