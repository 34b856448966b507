"""Tenant isolation under concurrency, through the services' own engine and pool.

Two tenants get rows in most tenant tables (inserted as the superuser). Then eight workers
share ONE pool that is smaller than the number of workers, so pooled connections hop between
tenants all the time, and each runs tenant transactions (``services.kit.db``) that try to
reach the other tenant's rows by their primary keys: read, update, delete, upsert onto the
key, insert rows carrying the other tenant's ``tenant_id``, move own rows to the other
tenant, and list. Each transaction also runs the same read, update and delete on one of its
own rows (rolled back to a savepoint), so statements that could never match anything would
not pass unnoticed.

Afterwards each tenant's rows, read as the superuser, must have the same checksum as before.
A second test pins a pool to one connection and checks that no tenant outlives its
transaction on it, whether the transaction commits, fails or is rolled back.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pytest
from sqlalchemy import TextClause, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.kit import db, errors
from services.kit.devstack import Platform

WORKERS = 8
POOL_SIZE = 4  # fewer connections than workers: every connection serves both tenants
TRANSACTIONS_PER_WORKER = 90
MIN_ATTEMPTS = 3_000
ROWS_PER_TENANT = 3
INSUFFICIENT_PRIVILEGE = "42501"

Key = tuple[Any, ...]


class Databases(NamedTuple):
    """Where the services' role and the superuser connect (same database)."""

    database_url: str
    admin_database_url: str


@dataclass(frozen=True)
class Table:
    """A tenant table under attack.

    ``insert`` adds one row of ``:tenant`` (``:tag`` is unique per call, ``:ref`` is the key
    of the tenant's ``parent`` row) and returns its primary key; ``upsert``, when given,
    inserts a row of ``:tenant`` with the key ``:k0`` and updates on conflict.
    """

    name: str
    key: tuple[str, ...]
    insert: str
    rows: int = ROWS_PER_TENANT
    parent: str | None = None
    upsert: str | None = None
    deletable: bool = True  # deleting an own row (in a savepoint) works: no rows refer to it

    @property
    def where(self) -> str:
        """The primary-key match with parameters ``:k0``, ``:k1`` …"""
        return " AND ".join(f"{column} = :k{i}" for i, column in enumerate(self.key))


TABLES = (
    Table(
        "app.tenants",
        ("tenant_id",),
        "INSERT INTO app.tenants (tenant_id, display_name, plan_id) "
        "VALUES (:tenant, CAST(:tag AS text), 'pro') RETURNING tenant_id",
        rows=1,
        deletable=False,
    ),
    Table(
        "app.users",
        ("user_id",),
        "INSERT INTO app.users (tenant_id, email, role) "
        "VALUES (:tenant, CAST(:tag AS text) || '@example.com', 'AGENT') RETURNING user_id",
        upsert="INSERT INTO app.users (user_id, tenant_id, email, role) "
        "VALUES (:k0, :tenant, CAST(:tag AS text) || '@example.com', 'ADMIN') "
        "ON CONFLICT (user_id) DO UPDATE SET role = excluded.role, email = excluded.email",
    ),
    Table(
        "app.customers",
        ("customer_id",),
        "INSERT INTO app.customers (tenant_id, name, email) "
        "VALUES (:tenant, CAST(:tag AS text), 'c@example.com') RETURNING customer_id",
        upsert="INSERT INTO app.customers (customer_id, tenant_id, name) "
        "VALUES (:k0, :tenant, CAST(:tag AS text)) "
        "ON CONFLICT (customer_id) DO UPDATE SET name = excluded.name",
    ),
    Table(
        "app.api_keys",
        ("key_id",),
        "INSERT INTO app.api_keys (key_id, tenant_id, prefix, secret_hash, scopes) "
        "VALUES (CAST(:tag AS text), :tenant, 'sm', sha256(convert_to(:tag, 'UTF8')), "
        "ARRAY['read']) RETURNING key_id",
        upsert="INSERT INTO app.api_keys (key_id, tenant_id, prefix, secret_hash, scopes) "
        "VALUES (:k0, :tenant, 'sm', sha256(convert_to(:tag, 'UTF8')), ARRAY['admin']) "
        "ON CONFLICT (key_id) DO UPDATE SET secret_hash = excluded.secret_hash, "
        "scopes = excluded.scopes",
    ),
    Table(
        "app.agent_runs",
        ("run_id",),
        "INSERT INTO app.agent_runs (tenant_id, workflow, status, input_data) "
        "VALUES (:tenant, 'faq', 'COMPLETED', jsonb_build_object('q', CAST(:tag AS text))) "
        "RETURNING run_id",
        upsert="INSERT INTO app.agent_runs (run_id, tenant_id, workflow, status) "
        "VALUES (:k0, :tenant, CAST(:tag AS text), 'FAILED') "
        "ON CONFLICT (run_id) DO UPDATE SET status = excluded.status",
    ),
    Table(
        "app.workflow_executions",
        ("execution_id",),
        "INSERT INTO app.workflow_executions (tenant_id, run_id, status, steps) "
        "VALUES (:tenant, :ref, 'DONE', jsonb_build_array(CAST(:tag AS text))) "
        "RETURNING execution_id",
        parent="app.agent_runs",
    ),
    Table(
        "app.audit_logs",
        ("log_id",),
        "INSERT INTO app.audit_logs (tenant_id, actor, action, resource) "
        "VALUES (:tenant, 'user:1', 'read', CAST(:tag AS text)) RETURNING log_id",
    ),
    Table(
        "app.tools",
        ("tenant_id", "name", "version"),
        "INSERT INTO app.tools (tenant_id, name, version, spec) "
        "VALUES (:tenant, CAST(:tag AS text), '1.0.0', '{}') RETURNING tenant_id, name, version",
    ),
    Table(
        "app.feature_flags",
        ("tenant_id", "flag"),
        "INSERT INTO app.feature_flags (tenant_id, flag, enabled) "
        "VALUES (:tenant, CAST(:tag AS text), true) RETURNING tenant_id, flag",
    ),
    Table(
        "app.usage_counters",
        ("tenant_id", "meter", "window_start"),
        "INSERT INTO app.usage_counters (tenant_id, meter, window_start, count, reset_at) "
        "VALUES (:tenant, CAST(:tag AS text), date_trunc('hour', now()), 5, "
        "date_trunc('hour', now()) + interval '1 hour') "
        "RETURNING tenant_id, meter, window_start",
    ),
    Table(
        "app.degrade_switches",
        ("tenant_id",),
        "INSERT INTO app.degrade_switches (tenant_id, reason) "
        "VALUES (:tenant, CAST(:tag AS text)) RETURNING tenant_id",
        rows=1,
    ),
)
BY_NAME = {table.name: table for table in TABLES}


@dataclass(frozen=True)
class Statements:
    """The prepared text of every statement run against one table."""

    read: TextClause
    update: TextClause
    delete: TextClause
    move: TextClause  # set an own row's tenant_id to another tenant
    insert: TextClause
    upsert: TextClause | None
    listing: TextClause
    checksum: TextClause

    @classmethod
    def of(cls, table: Table) -> Statements:
        """Build the statements for ``table`` (names and SQL are fixed in this module)."""
        name, where = table.name, table.where
        return cls(
            read=text(f"SELECT tenant_id FROM {name} WHERE {where}"),  # noqa: S608
            update=text(
                f"UPDATE {name} SET created_at = created_at + interval '1 day' WHERE {where}"  # noqa: S608
            ),
            delete=text(f"DELETE FROM {name} WHERE {where}"),  # noqa: S608
            move=text(f"UPDATE {name} SET tenant_id = :other WHERE {where}"),  # noqa: S608
            insert=text(table.insert),
            upsert=None if table.upsert is None else text(table.upsert),
            listing=text(
                f"SELECT tenant_id, count(*) AS n FROM {name} GROUP BY tenant_id"  # noqa: S608
            ),
            checksum=text(
                f"SELECT count(*) AS n, md5(coalesce(string_agg(r::text, '|' ORDER BY r::text), "  # noqa: S608
                f"'')) AS digest FROM {name} r WHERE tenant_id = :tenant"
            ),
        )


STATEMENTS = {table.name: Statements.of(table) for table in TABLES}
WHO_AM_I = text("SELECT pg_backend_pid() AS pid, current_setting('app.tenant_id', true) AS setting")


@dataclass
class Seeded:
    """The two tenants and the primary keys of their rows, per table."""

    tenants: tuple[str, str]
    keys: dict[str, dict[str, list[Key]]]  # tenant -> table -> keys

    def other(self, tenant: str) -> str:
        """The tenant that is not ``tenant``."""
        return self.tenants[1] if tenant == self.tenants[0] else self.tenants[0]


@dataclass
class Tally:
    """What the attack workers did and every way in which isolation failed."""

    attempts: int = 0
    controls: int = 0
    transactions: int = 0
    violations: list[str] = field(default_factory=list)
    tenants_by_pid: defaultdict[int, set[str]] = field(default_factory=lambda: defaultdict(set))

    def fail(self, message: str) -> None:
        """Record one isolation failure."""
        self.violations.append(message)


@pytest.fixture(scope="module")
def databases(platform: Platform) -> Databases:
    """The session platform's database (the services' role and the superuser)."""
    return Databases(platform.database_url, platform.admin_database_url)


@pytest.fixture(scope="module")
async def admin_engine(databases: Databases) -> AsyncIterator[AsyncEngine]:
    """An engine as the superuser (row-level security does not apply to it)."""
    engine = db.create_engine(databases.admin_database_url, pool_size=1)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
async def seeded(admin_engine: AsyncEngine) -> AsyncIterator[Seeded]:
    """Two fresh tenants with rows in every table of ``TABLES`` (removed afterwards)."""
    suffix = uuid.uuid4().hex[:8]
    tenants = (f"iso-a-{suffix}", f"iso-b-{suffix}")
    keys: dict[str, dict[str, list[Key]]] = {tenant: {} for tenant in tenants}
    async with admin_engine.begin() as connection:
        for tenant in tenants:
            for table in TABLES:
                keys[tenant][table.name] = []
                for _ in range(table.rows):
                    params = _insert_params(table, tenant, keys[tenant])
                    row = (await connection.execute(text(table.insert), params)).one()
                    keys[tenant][table.name].append(tuple(row))
    try:
        yield Seeded(tenants, keys)
    finally:
        async with admin_engine.begin() as connection:
            # Foreign keys off while cleaning up, in case a failed run left rows moved about.
            await connection.execute(text("SET LOCAL session_replication_role = replica"))
            for table in reversed(TABLES):
                await connection.execute(
                    text(f"DELETE FROM {table.name} WHERE tenant_id = ANY(:t)"),  # noqa: S608
                    {"t": list(tenants)},
                )


def _insert_params(table: Table, tenant: str, keys: Mapping[str, list[Key]]) -> dict[str, Any]:
    """Parameters for ``table.insert``: a row of ``tenant`` pointing at its parent row."""
    params: dict[str, Any] = {"tenant": tenant, "tag": f"iso-{uuid.uuid4().hex}"}
    if table.parent is not None:
        params["ref"] = keys[table.parent][-1][0]  # row 0 of each table may be deleted
    return params


def _key_params(key: Key) -> dict[str, Any]:
    return {f"k{i}": value for i, value in enumerate(key)}


async def _checksums(engine: AsyncEngine, tenants: tuple[str, ...]) -> dict[str, tuple[int, str]]:
    """Row count and digest of every tenant's rows in every table, read as the superuser."""
    found: dict[str, tuple[int, str]] = {}
    async with engine.begin() as connection:
        for tenant in tenants:
            for table in TABLES:
                row = (
                    await connection.execute(STATEMENTS[table.name].checksum, {"tenant": tenant})
                ).one()
                found[f"{tenant} {table.name}"] = (row.n, row.digest)
    return found


def _is_policy_violation(error: DBAPIError) -> bool:
    sqlstate = getattr(error.orig, "sqlstate", None)
    return sqlstate == INSUFFICIENT_PRIVILEGE and "row-level security" in str(error.orig)


async def _must_be_refused(
    connection: AsyncConnection,
    statement: TextClause,
    params: dict[str, Any],
    what: str,
    tally: Tally,
) -> None:
    """Run ``statement`` in a savepoint; it must fail with a row-level security violation."""
    tally.attempts += 1
    try:
        async with connection.begin_nested():
            result = await connection.execute(statement, params)
    except DBAPIError as error:
        if not _is_policy_violation(error):
            tally.fail(f"{what}: failed, but not by row-level security: {error.orig}")
        return
    tally.fail(f"{what}: succeeded ({result.rowcount} rows)")


async def _own_row_controls(
    connection: AsyncConnection, table: Table, key: Key, actor: str, tally: Tally
) -> None:
    """The statements used against the other tenant do hit the actor's own row."""
    statements = STATEMENTS[table.name]
    params = _key_params(key)
    rows = (await connection.execute(statements.read, params)).all()
    if [row.tenant_id for row in rows] != [actor]:
        tally.fail(f"{actor} reading own {table.name} {key}: {rows}")
    savepoint = await connection.begin_nested()
    changed = (await connection.execute(statements.update, params)).rowcount
    deleted = (
        (await connection.execute(statements.delete, params)).rowcount if table.deletable else 1
    )
    await savepoint.rollback()
    if changed != 1 or deleted != 1:
        tally.fail(f"{actor} own {table.name} {key}: updated {changed}, deleted {deleted}")
    tally.controls += 1


async def _attack(
    connection: AsyncConnection,
    table: Table,
    actor: str,
    victim_key: Key,
    own_key: Key,
    seeded: Seeded,
    tally: Tally,
) -> None:
    """One round of ID-swap attempts by ``actor`` on the other tenant's row ``victim_key``."""
    victim = seeded.other(actor)
    statements = STATEMENTS[table.name]
    where = f"{actor} -> {victim} {table.name} {victim_key}"
    victim_params = _key_params(victim_key)

    tally.attempts += 3
    rows = (await connection.execute(statements.read, victim_params)).all()
    if rows:
        tally.fail(f"{where}: read returned {rows}")
    updated = (await connection.execute(statements.update, victim_params)).rowcount
    if updated:
        tally.fail(f"{where}: update changed {updated} rows")
    deleted = (await connection.execute(statements.delete, victim_params)).rowcount
    if deleted:
        tally.fail(f"{where}: delete removed {deleted} rows")

    tally.attempts += 1
    listed = {row.tenant_id: row.n for row in (await connection.execute(statements.listing)).all()}
    if listed != {actor: table.rows}:
        tally.fail(f"{actor} listing {table.name}: {listed}")

    await _must_be_refused(
        connection,
        statements.insert,
        _insert_params(table, victim, seeded.keys[victim]),
        f"{where}: insert with tenant_id {victim}",
        tally,
    )
    await _must_be_refused(
        connection,
        statements.move,
        {**_key_params(own_key), "other": victim},
        f"{actor} {table.name} {own_key}: move to {victim}",
        tally,
    )
    if statements.upsert is not None:
        await _must_be_refused(
            connection,
            statements.upsert,
            {**_insert_params(table, actor, seeded.keys[actor]), **victim_params},
            f"{where}: upsert onto the other tenant's key",
            tally,
        )


async def _worker(
    engine: AsyncEngine, seeded: Seeded, worker: int, tally: Tally, start: asyncio.Event
) -> None:
    rng = random.Random(worker)
    await start.wait()
    for i in range(TRANSACTIONS_PER_WORKER):
        actor = rng.choice(seeded.tenants)
        victim = seeded.other(actor)
        table = TABLES[(worker + i) % len(TABLES)]
        own_keys = seeded.keys[actor][table.name]
        victim_key = rng.choice(seeded.keys[victim][table.name])
        own_key = rng.choice(own_keys)
        try:
            async with db.tenant_transaction(engine, actor) as connection:
                who = (await connection.execute(WHO_AM_I)).one()
                tally.tenants_by_pid[who.pid].add(actor)
                if who.setting != actor:
                    tally.fail(f"transaction for {actor} runs with tenant {who.setting!r}")
                await _attack(connection, table, actor, victim_key, own_key, seeded, tally)
                await _own_row_controls(
                    connection, table, own_keys[0] if table.deletable else own_key, actor, tally
                )
                setting = (await connection.execute(WHO_AM_I)).one().setting
                if setting != actor:
                    tally.fail(f"after refused statements, {actor}'s transaction has {setting!r}")
        except DBAPIError as error:  # e.g. a foreign key hit by a write that should be invisible
            tally.fail(f"{actor} on {table.name}: unexpected error {error.orig}")
        tally.transactions += 1


async def test_concurrent_id_swaps_never_cross_tenants(
    databases: Databases, admin_engine: AsyncEngine, seeded: Seeded
) -> None:
    before = await _checksums(admin_engine, seeded.tenants)
    assert all(count for count, _ in before.values()), before
    engine = db.create_engine(databases.database_url, pool_size=POOL_SIZE, max_overflow=0)
    tally = Tally()
    start = asyncio.Event()
    try:
        workers = [
            asyncio.create_task(_worker(engine, seeded, worker, tally, start))
            for worker in range(WORKERS)
        ]
        start.set()
        await asyncio.gather(*workers)
    finally:
        await engine.dispose()
    after = await _checksums(admin_engine, seeded.tenants)

    assert not tally.violations, f"{len(tally.violations)} isolation failures, first 40:\n" + (
        "\n".join(tally.violations[:40])
    )
    changed = {name: (before[name], after[name]) for name in before if before[name] != after[name]}
    assert not changed, f"rows changed although every write was cross-tenant: {changed}"
    assert tally.transactions == WORKERS * TRANSACTIONS_PER_WORKER
    assert tally.attempts >= MIN_ATTEMPTS, tally.attempts
    assert tally.controls == tally.transactions
    # The pool really was shared: at most POOL_SIZE connections, each serving both tenants.
    assert len(tally.tenants_by_pid) <= POOL_SIZE, tally.tenants_by_pid
    assert all(len(t) == 2 for t in tally.tenants_by_pid.values()), tally.tenants_by_pid


async def _no_tenant_view(engine: AsyncEngine) -> tuple[int, str | None, dict[str, int]]:
    """Backend pid, tenant setting and row counts of a transaction without a tenant."""
    async with db.global_transaction(engine) as connection:
        who = (await connection.execute(WHO_AM_I)).one()
        counts = {
            table.name: (
                await connection.execute(text(f"SELECT count(*) FROM {table.name}"))  # noqa: S608
            ).scalar_one()
            for table in TABLES
        }
    return who.pid, who.setting, counts


async def test_pooled_connection_never_carries_a_tenant_into_the_next_transaction(
    databases: Databases, seeded: Seeded
) -> None:
    engine = db.create_engine(databases.database_url, pool_size=1, max_overflow=0)
    a, b = seeded.tenants
    nothing = {table.name: 0 for table in TABLES}
    try:
        pid, setting, counts = await _no_tenant_view(engine)
        assert (setting or "", counts) == ("", nothing)
        for actor in (a, b, a):
            async with db.tenant_transaction(engine, actor) as connection:
                who = (await connection.execute(WHO_AM_I)).one()
                assert (who.pid, who.setting) == (pid, actor)
                listing = STATEMENTS["app.users"].listing
                users = {row.tenant_id: row.n for row in (await connection.execute(listing))}
                assert users == {actor: ROWS_PER_TENANT}
            pid_after, setting, counts = await _no_tenant_view(engine)
            assert (pid_after, setting or "", counts) == (pid, "", nothing)

        # A transaction that fails on a policy violation and is rolled back.
        with pytest.raises(DBAPIError) as refused:
            async with db.tenant_transaction(engine, a) as connection:
                await connection.execute(
                    STATEMENTS["app.users"].insert, _insert_params(BY_NAME["app.users"], b, {})
                )
        assert _is_policy_violation(refused.value)
        pid_after, setting, counts = await _no_tenant_view(engine)
        assert (pid_after, setting or "", counts) == (pid, "", nothing)

        # A transaction the application abandons with its own exception.
        with pytest.raises(RuntimeError, match="abandon"):
            async with db.tenant_transaction(engine, b):
                raise RuntimeError("abandon")
        pid_after, setting, counts = await _no_tenant_view(engine)
        assert (pid_after, setting or "", counts) == (pid, "", nothing)

        with pytest.raises(errors.Unauthenticated):
            async with db.tenant_transaction(engine, ""):
                pass
    finally:
        await engine.dispose()
