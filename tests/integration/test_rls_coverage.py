"""Every tenant table is under forced row-level security, and the services cannot escape it.

This is the CI check for row-level security coverage (CI runs the test suite). It inspects
the live catalog after all migrations, so a new table with a ``tenant_id`` column that misses
``ENABLE``/``FORCE ROW LEVEL SECURITY`` or a tenant policy fails here, named, without
anybody having to remember to list it:

- each table (any schema but the system ones) with a ``tenant_id`` column has RLS enabled
  and forced, at least one policy, only permissive policies that compare against
  ``app.current_tenant()`` (another permissive policy would OR more rows in), and an owner
  other than the services' role;
- views over tenant rows that the services may read run with the caller's rights
  (``security_invoker``), and materialized views over tenant rows (which RLS cannot cover)
  are not readable by the services at all;
- the services' role is not superuser or BYPASSRLS, is not a member of any role that is, or
  that owns a tenant table, and owns nothing;
- behaviour: with rows for two tenants in every tenant table, the services' role sees zero
  rows with no tenant set and only the chosen tenant's rows with one set, and cannot turn
  row security off for itself.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import NamedTuple

import asyncpg
import pytest

from services.kit.devstack import Platform

CURRENT_TENANT = "app.current_tenant()"
# Values for NOT NULL columns without a default whose type alone does not give a valid one
# (CHECK constraints). A new tenant table with such a column needs an entry here.
COLUMN_OVERRIDES: dict[tuple[str, str], str] = {
    ("tenants", "plan_id"): "'free'",
    ("users", "role"): "'AGENT'",
}


class Databases(NamedTuple):
    """Where the services' role and the superuser connect (same database)."""

    database_url: str
    admin_database_url: str


@dataclass(frozen=True)
class TenantTable:
    """A table (not a view) in the database that has a ``tenant_id`` column."""

    oid: int
    name: str  # schema-qualified and quoted as needed, e.g. app.users
    owner: str
    rowsecurity: bool
    forcerowsecurity: bool
    readable: bool  # the services' role may SELECT from it


@pytest.fixture(scope="module")
def databases(platform: Platform) -> Databases:
    """The session platform's database (the services' role and the superuser)."""
    return Databases(platform.database_url, platform.admin_database_url)


@pytest.fixture(scope="module")
async def admin(databases: Databases) -> AsyncIterator[asyncpg.Connection]:
    """A superuser connection with a search path that makes catalog output schema-qualified."""
    connection = await asyncpg.connect(databases.admin_database_url)
    await connection.execute("SET search_path = pg_catalog")
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture(scope="module")
async def app_connection(databases: Databases) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the services connect: the URL the services are given."""
    connection = await asyncpg.connect(databases.database_url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture(scope="module")
async def app_role(app_connection: asyncpg.Connection) -> str:
    """The role the services connect as."""
    role = await app_connection.fetchval("SELECT current_user")
    assert role == await app_connection.fetchval("SELECT session_user")
    return str(role)


async def tenant_tables(admin: asyncpg.Connection, app_role: str) -> list[TenantTable]:
    """Every ordinary or partitioned table outside the system schemas with a tenant_id."""
    rows = await admin.fetch(
        """
        SELECT c.oid, c.oid::regclass::text AS name, pg_get_userbyid(c.relowner) AS owner,
               c.relrowsecurity, c.relforcerowsecurity,
               has_table_privilege($1, c.oid, 'SELECT') AS readable
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid
        WHERE a.attname = 'tenant_id' AND a.attnum > 0 AND NOT a.attisdropped
          AND c.relkind IN ('r', 'p')
          AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
        ORDER BY 2
        """,
        app_role,
    )
    return [
        TenantTable(
            oid=row["oid"],
            name=row["name"],
            owner=row["owner"],
            rowsecurity=row["relrowsecurity"],
            forcerowsecurity=row["relforcerowsecurity"],
            readable=row["readable"],
        )
        for row in rows
    ]


@pytest.fixture(scope="module")
async def tables(admin: asyncpg.Connection, app_role: str) -> list[TenantTable]:
    """The tenant tables; the schema must have some, or every check below is vacuous."""
    found = await tenant_tables(admin, app_role)
    names = {table.name for table in found}
    assert {"app.tenants", "app.users", "app.agent_runs"} <= names, names
    assert all(table.readable for table in found if table.name.startswith("app.")), found
    return found


def _sql(template: str, table: TenantTable, **parts: str) -> str:
    """``template`` with ``{table}`` (and any ``parts``) filled in.

    The only place SQL text is built: the table name is ``regclass`` output and column names
    are ``quote_ident`` output, both from the catalog, and values are fixed literals.
    """
    return template.format(table=table.name, **parts)


def _mentions_current_tenant(expression: str | None) -> bool:
    return expression is not None and CURRENT_TENANT in expression


async def test_every_tenant_table_has_forced_rls_and_a_tenant_policy(
    admin: asyncpg.Connection, tables: list[TenantTable], app_role: str
) -> None:
    problems: list[str] = []
    for table in tables:
        if not table.rowsecurity:
            problems.append(f"{table.name}: row-level security is not enabled")
        if not table.forcerowsecurity:
            problems.append(f"{table.name}: row-level security is not forced")
        if table.owner == app_role:
            problems.append(f"{table.name}: owned by the services' role {app_role}")
        policies = await admin.fetch(
            """
            SELECT polname, polcmd::text AS cmd, polpermissive,
                   pg_get_expr(polqual, polrelid) AS using_clause,
                   pg_get_expr(polwithcheck, polrelid) AS check_clause
            FROM pg_policy WHERE polrelid = $1 ORDER BY polname
            """,
            table.oid,
        )
        if not policies:
            problems.append(f"{table.name}: no policy")
            continue
        if not any(
            policy["polpermissive"]
            and policy["cmd"] in ("*", "r")
            and _mentions_current_tenant(policy["using_clause"])
            for policy in policies
        ):
            problems.append(
                f"{table.name}: no permissive SELECT policy whose USING clause "
                f"references {CURRENT_TENANT}"
            )
        for policy in policies:
            if not policy["polpermissive"]:
                continue  # restrictive policies can only narrow what is visible
            for clause in ("using_clause", "check_clause"):
                expression = policy[clause]
                if expression is not None and not _mentions_current_tenant(expression):
                    problems.append(
                        f"{table.name}: permissive policy {policy['polname']} has a "
                        f"{clause.replace('_', ' ')} that ignores {CURRENT_TENANT}: {expression}"
                    )
    assert not problems, "tenant tables without proper row-level security:\n" + "\n".join(problems)


async def test_current_tenant_reads_the_transaction_setting(admin: asyncpg.Connection) -> None:
    function = await admin.fetchrow(
        """
        SELECT p.prosrc, p.provolatile, p.prosecdef
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'app' AND p.proname = 'current_tenant' AND p.pronargs = 0
        """
    )
    assert function is not None, f"{CURRENT_TENANT} does not exist"
    assert re.search(r"current_setting\(\s*'app\.tenant_id'\s*,\s*true\s*\)", function["prosrc"])
    assert function["provolatile"] == b"s"  # STABLE: evaluated once per statement
    assert not function["prosecdef"]


async def test_views_over_tenant_rows_do_not_bypass_rls(
    admin: asyncpg.Connection, app_role: str
) -> None:
    rows = await admin.fetch(
        """
        SELECT DISTINCT c.oid::regclass::text AS name, c.relkind::text AS kind,
               coalesce(c.reloptions, '{}') AS options,
               has_table_privilege($1, c.oid, 'SELECT') AS readable
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid
        WHERE a.attname = 'tenant_id' AND NOT a.attisdropped AND c.relkind IN ('v', 'm')
          AND n.nspname NOT IN ('pg_catalog', 'information_schema')
        """,
        app_role,
    )
    problems = [
        f"{row['name']}: materialized view over tenant rows readable by {app_role}"
        for row in rows
        if row["kind"] == "m" and row["readable"]
    ] + [
        f"{row['name']}: view over tenant rows readable by {app_role} without security_invoker"
        for row in rows
        if row["kind"] == "v"
        and row["readable"]
        and not {"security_invoker=true", "security_invoker=on"} & set(row["options"])
    ]
    assert not problems, "\n".join(problems)


async def test_services_role_is_not_privileged_and_owns_nothing(
    admin: asyncpg.Connection, tables: list[TenantTable], app_role: str
) -> None:
    role = await admin.fetchrow(
        "SELECT oid, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1", app_role
    )
    assert role is not None
    problems: list[str] = []
    if role["rolsuper"]:
        problems.append(f"{app_role} is a superuser")
    if role["rolbypassrls"]:
        problems.append(f"{app_role} has BYPASSRLS")
    # Membership would let the role SET ROLE to one that bypasses RLS or may disable it.
    owners = sorted({table.owner for table in tables})
    escalations = await admin.fetch(
        """
        SELECT rolname FROM pg_roles
        WHERE oid <> $1 AND (rolsuper OR rolbypassrls OR rolname = ANY($2::text[]))
          AND pg_has_role($1, oid, 'MEMBER')
        ORDER BY rolname
        """,
        role["oid"],
        owners,
    )
    problems += [
        f"{app_role} is a member of {row['rolname']} (superuser, BYPASSRLS or a table owner)"
        for row in escalations
    ]
    owned = await admin.fetch(
        """
        SELECT pg_describe_object(classid, objid, objsubid) AS object FROM pg_shdepend
        WHERE refclassid = 'pg_authid'::regclass AND refobjid = $1 AND deptype = 'o'
          AND dbid IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))
        UNION
        SELECT 'database ' || datname FROM pg_database WHERE datdba = $1
        ORDER BY 1
        """,
        role["oid"],
    )
    problems += [f"{app_role} owns {row['object']}" for row in owned]
    assert not problems, "\n".join(problems)


def _literal_for(table: str, column: str, data_type: str, tag: str) -> str:
    """A SQL literal valid for a NOT NULL column without a default."""
    if (table, column) in COLUMN_OVERRIDES:
        return COLUMN_OVERRIDES[(table, column)]
    if data_type.endswith("[]"):
        return "'{}'"
    by_type = {
        "uuid": "gen_random_uuid()",
        "text": f"'{tag}'",
        "character varying": f"'{tag}'",
        "boolean": "true",
        "smallint": "1",
        "integer": "1",
        "bigint": "1",
        "numeric": "0",
        "double precision": "0",
        "real": "0",
        "jsonb": "'{}'",
        "json": "'{}'",
        "bytea": "'\\x00'",
        "timestamp with time zone": "now()",
        "timestamp without time zone": "now()",
        "date": "current_date",
    }
    base = re.sub(r"\(.*\)", "", data_type)
    if base not in by_type:
        pytest.fail(f"add a COLUMN_OVERRIDES entry for {table}.{column} ({data_type})")
    return by_type[base]


async def _insert_row(admin: asyncpg.Connection, table: TenantTable, tenant: str) -> None:
    """Insert one row of ``tenant`` into ``table`` with made-up values for required columns."""
    columns = await admin.fetch(
        """
        SELECT quote_ident(attname) AS name, attname, format_type(atttypid, atttypmod) AS type
        FROM pg_attribute
        WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated = ''
          AND attidentity = '' AND (attname = 'tenant_id' OR (attnotnull AND NOT atthasdef))
        ORDER BY attnum
        """,
        table.oid,
    )
    short = table.name.rpartition(".")[2].strip('"')
    names: list[str] = []
    values: list[str] = []
    for column in columns:
        names.append(column["name"])
        if column["attname"] == "tenant_id":
            values.append("$1")
        else:
            tag = f"rls-{uuid.uuid4().hex[:12]}"
            values.append(_literal_for(short, column["attname"], column["type"], tag))
    insert = "INSERT INTO {table} ({columns}) VALUES ({values})"
    await admin.execute(
        _sql(insert, table, columns=", ".join(names), values=", ".join(values)), tenant
    )


@pytest.fixture(scope="module")
async def two_tenants(
    admin: asyncpg.Connection, tables: list[TenantTable]
) -> AsyncIterator[tuple[str, str]]:
    """One row per tenant table for each of two fresh tenants (removed afterwards).

    Foreign keys are not enforced while seeding (``session_replication_role = replica``),
    so the rows need no parents and any tenant table can be seeded generically.
    """
    suffix = uuid.uuid4().hex[:8]
    tenants = (f"cov-a-{suffix}", f"cov-b-{suffix}")
    async with admin.transaction():
        await admin.execute("SET LOCAL session_replication_role = replica")
        for tenant in tenants:
            for table in tables:
                await _insert_row(admin, table, tenant)
    try:
        yield tenants
    finally:
        async with admin.transaction():
            await admin.execute("SET LOCAL session_replication_role = replica")
            for table in tables:
                await admin.execute(
                    _sql("DELETE FROM {table} WHERE tenant_id = ANY($1::text[])", table),
                    list(tenants),
                )


async def test_services_role_sees_no_tenant_rows_without_a_tenant(
    admin: asyncpg.Connection,
    app_connection: asyncpg.Connection,
    tables: list[TenantTable],
    two_tenants: tuple[str, str],
) -> None:
    seeded: list[str] = []
    leaks: list[str] = []
    for table in tables:
        count_sql = _sql("SELECT count(*) FROM {table}", table)
        present = await admin.fetchval(
            _sql("SELECT count(*) FROM {table} WHERE tenant_id = ANY($1::text[])", table),
            list(two_tenants),
        )
        if present != len(two_tenants):
            seeded.append(f"{table.name}: {present} seeded rows")
        if not table.readable:
            continue  # not granted to the services at all: nothing to see
        for setting in (None, ""):
            async with app_connection.transaction():
                if setting is not None:
                    await app_connection.execute(
                        "SELECT set_config('app.tenant_id', $1, true)", setting
                    )
                visible = await app_connection.fetchval(count_sql)
            if visible:
                leaks.append(f"{table.name}: {visible} rows visible with tenant {setting!r}")
    assert not seeded, "seeding failed:\n" + "\n".join(seeded)
    assert not leaks, "the services' role sees tenant rows without a tenant:\n" + "\n".join(leaks)


async def test_services_role_sees_exactly_the_current_tenants_rows(
    app_connection: asyncpg.Connection, tables: list[TenantTable], two_tenants: tuple[str, str]
) -> None:
    problems: list[str] = []
    for tenant in two_tenants:
        for table in (table for table in tables if table.readable):
            async with app_connection.transaction():
                await app_connection.execute("SELECT set_config('app.tenant_id', $1, true)", tenant)
                rows = await app_connection.fetch(
                    _sql("SELECT tenant_id, count(*) AS n FROM {table} GROUP BY tenant_id", table)
                )
            visible = {row["tenant_id"]: row["n"] for row in rows}
            if visible != {tenant: 1}:
                problems.append(f"{table.name} as {tenant}: sees {visible}")
    assert not problems, "\n".join(problems)


async def test_services_role_cannot_switch_row_security_off(
    app_connection: asyncpg.Connection, tables: list[TenantTable]
) -> None:
    await app_connection.execute("SET row_security = off")
    try:
        for table in (table for table in tables if table.readable):
            # With row_security off, a query RLS would filter fails instead of bypassing it.
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
                await app_connection.fetchval(_sql("SELECT count(*) FROM {table}", table))
    finally:
        await app_connection.execute("RESET row_security")
