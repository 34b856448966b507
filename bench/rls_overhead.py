"""What row-level security costs: the same queries with RLS and without it, side by side.

The script starts PostgreSQL (durable settings, a temporary directory, a free port), applies
the migrations, bulk-loads ``--tenants`` × ``--rows`` agent runs (COPY, as the superuser),
runs VACUUM (ANALYZE) and a CHECKPOINT, then measures two queries, each two ways, over
asyncpg prepared statements:

- point: one run by primary key (``WHERE run_id = $1``);
- list:  a tenant's latest runs (``WHERE tenant_id = $1 ORDER BY created_at DESC LIMIT 50``).

"RLS" runs them as the services' role (``supportmesh_app``), to which the tenant policy
applies; "no RLS" runs the identical SQL as the superuser, whom RLS does not apply to (the
table owner would not do: FORCE ROW LEVEL SECURITY applies the policy to it as well). Both
run the same transaction shape, as ``services.kit.db.tenant_transaction`` does:
BEGIN; ``set_config('app.tenant_id', …, true)``; the query; COMMIT. So only RLS differs.

The four variants are interleaved, with the order rotating every round and each round using
the same tenant and run for all four, so machine noise hits them alike. Reported: the query
alone (the statement's round trip) and the whole transaction, p50/p99, and the RLS/no-RLS
ratios against the goals (point ≤ 1.1, list ≤ 1.2). Also the EXPLAIN ANALYZE of both queries
as the services' role, to show the (tenant_id, created_at) and primary key indexes are used.

Figures, not a verdict: the exit code is 0 whether or not a goal is met. Run it as
``.venv/bin/python bench/rls_overhead.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform as host
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from asyncpg.prepared_stmt import PreparedStatement

from services.dataplane import migrate
from services.kit import db
from services.kit.devstack import APP_ROLE, DATABASE, with_database
from services.kit.stack import PostgresServer, free_port

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._stats import Cell, print_table, summarize

POINT_SQL = (
    "SELECT run_id, tenant_id, workflow, status, created_at, completed_at "
    "FROM app.agent_runs WHERE run_id = $1"
)
LIST_SQL = (
    "SELECT run_id, workflow, status, created_at FROM app.agent_runs "
    "WHERE tenant_id = $1 ORDER BY created_at DESC LIMIT 50"
)
SET_TENANT_SQL = "SELECT set_config('app.tenant_id', $1, true)"
GOALS = {"point": 1.1, "list": 1.2}
LIST_LIMIT = 50
WORKFLOWS = ("faq", "order_status", "refund", "lead_capture", "tracking")
STATUSES = ("COMPLETED", "COMPLETED", "COMPLETED", "FAILED", "RUNNING")
COLUMNS = ("run_id", "tenant_id", "workflow", "status", "input_data", "output_data", "created_at")


@dataclass
class Variant:
    """One query run one way, and what it measured."""

    query: str  # "point" or "list"
    rls: bool
    connection: asyncpg.Connection
    statement: PreparedStatement
    set_tenant: PreparedStatement
    query_ms: list[float] = field(default_factory=list)
    txn_ms: list[float] = field(default_factory=list)
    wrong: int = 0  # results of an unexpected size

    @property
    def label(self) -> str:
        """How the variant is named in the tables."""
        return f"{self.query} {'RLS (app role)' if self.rls else 'no RLS (superuser)'}"

    async def run(self, tenant: str, run_id: uuid.UUID, *, record: bool) -> None:
        """One tenant transaction around the query; keep its timings when ``record``."""
        arg: str | uuid.UUID = run_id if self.query == "point" else tenant
        start = time.perf_counter_ns()
        async with self.connection.transaction():
            await self.set_tenant.fetchval(tenant)
            query_start = time.perf_counter_ns()
            rows = await self.statement.fetch(arg)
            query_end = time.perf_counter_ns()
        end = time.perf_counter_ns()
        expected = 1 if self.query == "point" else LIST_LIMIT
        if len(rows) != expected or any(row["run_id"] is None for row in rows):
            self.wrong += 1
        if record:
            self.query_ms.append((query_end - query_start) / 1e6)
            self.txn_ms.append((end - start) / 1e6)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--rows", type=int, default=5_000, help="agent runs per tenant")
    parser.add_argument("--iterations", type=int, default=5_000, help="measured, per variant")
    parser.add_argument("--warmup", type=int, default=500, help="unmeasured rounds first")
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args()


def tenant_ids(count: int) -> list[str]:
    return [f"bench-{i:03d}" for i in range(count)]


async def load(
    admin_url: str, tenants: Sequence[str], rows: int, rng: random.Random
) -> dict[str, list[uuid.UUID]]:
    """Create the tenants and COPY their agent runs in; return each tenant's run ids."""
    connection = await asyncpg.connect(admin_url)
    now = datetime.now(UTC)
    runs: dict[str, list[uuid.UUID]] = {}
    try:
        await connection.executemany(
            "INSERT INTO app.tenants (tenant_id, display_name, plan_id) VALUES ($1, $2, 'pro')",
            [(tenant, tenant.upper()) for tenant in tenants],
        )
        for tenant in tenants:
            records = []
            runs[tenant] = []
            for i in range(rows):
                run_id = uuid.UUID(int=rng.getrandbits(128), version=4)
                runs[tenant].append(run_id)
                question = f"Where is my order {rng.randrange(10**6)}? It has not arrived yet."
                records.append(
                    (
                        run_id,
                        tenant,
                        WORKFLOWS[i % len(WORKFLOWS)],
                        rng.choice(STATUSES),
                        json.dumps({"query": question, "channel": "web", "locale": "en-GB"}),
                        json.dumps({"answer": "It ships today. " * 8, "tokens": 182}),
                        now - timedelta(seconds=rng.uniform(0, 90 * 86_400)),
                    )
                )
            await connection.copy_records_to_table(
                "agent_runs", schema_name="app", columns=COLUMNS, records=records
            )
        # Settle the fresh rows (hint bits, visibility map, statistics) and flush them, so
        # neither autovacuum nor a checkpoint runs in the middle of the measurements.
        await connection.execute("VACUUM (ANALYZE) app.tenants, app.agent_runs")
        await connection.execute("CHECKPOINT")
    finally:
        await connection.close()
    return runs


async def explain(
    connection: asyncpg.Connection, sql: str, tenant: str, arg: str | uuid.UUID, *, generic: bool
) -> str:
    """EXPLAIN ANALYZE of ``sql`` in a tenant transaction on ``connection``.

    ``generic`` shows the generic plan, which a prepared statement may switch to after five
    executions, instead of the plan for this argument.
    """
    async with connection.transaction():
        await connection.execute(SET_TENANT_SQL, tenant)
        mode = "force_generic_plan" if generic else "force_custom_plan"
        await connection.execute(f"SET LOCAL plan_cache_mode = {mode}")
        await connection.execute(f"PREPARE explained AS {sql}")
        # EXECUTE takes no bind parameters: pass the argument as a quoted literal.
        literal = await connection.fetchval("SELECT quote_literal($1::text)", str(arg))
        try:
            lines = await connection.fetch(
                "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF, BUFFERS OFF) "
                f"EXECUTE explained({literal})"
            )
        finally:
            await connection.execute("DEALLOCATE explained")
    return "\n".join(f"    {line[0]}" for line in lines)


async def cross_tenant_check(
    rls: asyncpg.Connection, superuser: asyncpg.Connection, tenant: str, foreign_run: uuid.UUID
) -> tuple[int, int]:
    """Rows of another tenant's run visible with ``tenant`` set: as app role, as superuser."""
    seen: list[int] = []
    for connection in (rls, superuser):
        async with connection.transaction():
            await connection.execute(SET_TENANT_SQL, tenant)
            seen.append(len(await connection.fetch(POINT_SQL, foreign_run)))
    return seen[0], seen[1]


def ratio_rows(variants: Sequence[Variant]) -> list[list[Cell]]:
    by_key = {(v.query, v.rls): v for v in variants}
    rows: list[list[Cell]] = []
    for query, goal in GOALS.items():
        with_rls, without = by_key[(query, True)], by_key[(query, False)]
        for scope in ("query", "txn"):
            a = summarize(with_rls.query_ms if scope == "query" else with_rls.txn_ms)
            b = summarize(without.query_ms if scope == "query" else without.txn_ms)
            p50, p99 = a.p50 / b.p50, a.p99 / b.p99
            verdict = "meets" if max(p50, p99) <= goal else "misses"
            delta_us = (a.p50 - b.p50) * 1000
            rows.append([f"{query} ({scope})", p50, p99, delta_us, f"≤ {goal}", verdict])
    return rows


async def bench(database_url: str, admin_url: str, args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    tenants = tenant_ids(args.tenants)
    started = time.perf_counter()
    runs = await load(admin_url, tenants, args.rows, rng)
    loaded_s = time.perf_counter() - started
    print(
        f"loaded {args.tenants} tenants × {args.rows:,} agent runs "
        f"({args.tenants * args.rows:,} rows), vacuumed and analyzed in {loaded_s:.1f} s"
    )

    rls = await asyncpg.connect(database_url)
    superuser = await asyncpg.connect(admin_url)
    try:
        role = await rls.fetchrow(
            "SELECT current_user AS name, rolsuper, rolbypassrls FROM pg_roles "
            "WHERE rolname = current_user"
        )
        if role is None or role["name"] != APP_ROLE or role["rolsuper"] or role["rolbypassrls"]:
            raise RuntimeError(f"the services' role would not be subject to RLS: {role}")
        version = await superuser.fetchval("SHOW server_version")
        variants = [
            Variant(query, with_rls, connection, await connection.prepare(sql),
                    await connection.prepare(SET_TENANT_SQL))
            for query, sql in (("point", POINT_SQL), ("list", LIST_SQL))
            for with_rls, connection in ((True, rls), (False, superuser))
        ]  # fmt: skip

        inputs = [
            (tenant, rng.choice(runs[tenant]))
            for tenant in (rng.choice(tenants) for _ in range(args.warmup + args.iterations))
        ]
        gc.collect()
        gc.disable()
        started = time.perf_counter()
        try:
            for round_no, (tenant, run_id) in enumerate(inputs):
                first = round_no % len(variants)
                for variant in variants[first:] + variants[:first]:
                    await variant.run(tenant, run_id, record=round_no >= args.warmup)
        finally:
            gc.enable()
        elapsed = time.perf_counter() - started

        a, b = tenants[0], tenants[1]
        leak_rls, leak_su = await cross_tenant_check(rls, superuser, a, runs[b][0])
        plans = {
            (query, generic): await explain(rls, sql, a, arg, generic=generic)
            for query, sql, arg in (("point", POINT_SQL, runs[a][0]), ("list", LIST_SQL, a))
            for generic in (False, True)
        }
    finally:
        await rls.close()
        await superuser.close()

    print(
        f"PostgreSQL {version}, Python {host.python_version()}, {os.cpu_count()} CPUs, "
        f"{args.iterations:,} measured rounds (+{args.warmup:,} warm-up) of 4 variants, "
        f"interleaved, in {elapsed:.1f} s"
    )
    print()
    print("Latency in ms: 'query' is the statement's round trip, 'txn' is BEGIN … COMMIT")
    rows: list[list[Cell]] = []
    for variant in variants:
        q, t = summarize(variant.query_ms), summarize(variant.txn_ms)
        rows.append([variant.label, q.n, q.p50, q.p99, t.p50, t.p99, variant.wrong])
    print_table(
        ["variant", "n", "query p50", "query p99", "txn p50", "txn p99", "wrong size"], rows
    )
    print()
    print("Ratio RLS / no RLS (goal applies to p50 and p99)")
    print_table(["query", "p50", "p99", "Δ p50 µs", "goal", ""], ratio_rows(variants), digits=3)
    print()
    print(
        f"Cross-tenant check: with tenant {a} set, another tenant's run by id returns "
        f"{leak_rls} row(s) as {APP_ROLE} and {leak_su} as the superuser"
    )
    print()
    for (query, generic), plan in plans.items():
        kind = "generic plan" if generic else "custom plan"
        print(f"EXPLAIN ANALYZE as {APP_ROLE}, tenant {a}: {query} query, {kind}")
        print(plan)


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="rls-bench-") as state:
        server = PostgresServer(Path(state) / "postgres", free_port(), fast=False)
        server.start()
        try:
            asyncio.run(db.ensure_database(server.url, DATABASE))
            admin_url = with_database(server.url, DATABASE)
            migrate.upgrade(admin_url)
            asyncio.run(bench(with_database(server.url, DATABASE, APP_ROLE), admin_url, args))
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
