"""Run rows: ``app.agent_runs`` and ``app.workflow_executions`` under row-level security.

Every write happens in a tenant transaction together with the outbox events it implies
(see :mod:`services.orchestrator.outbox`). A running run holds a lease (``lease_owner``,
``lease_until``) that its orchestrator renews; a lapsed lease marks a run to recover.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.kit import db

FINAL = ("SUCCEEDED", "FAILED", "COMPENSATED", "CANCELLED")
_COLUMNS = (
    "run_id::text, workflow, workflow_version, status, input_data, output_data, metrics, "
    "coalesce(request_id, ''), session_id, user_id, decision_id, created_at, started_at, "
    "completed_at, updated_at"
)


@dataclass(frozen=True)
class RunRow:
    """One ``agent_runs`` row."""

    run_id: str
    workflow: str
    version: str
    status: str
    input: dict[str, Any]
    output: dict[str, Any]
    metrics: dict[str, Any]
    request_id: str
    session_id: str
    user_id: str
    decision_id: str
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    updated_at: datetime

    @property
    def final(self) -> bool:
        """Whether the run reached a final status."""
        return self.status in FINAL


def _row(values: Sequence[Any]) -> RunRow:
    return RunRow(*values)


async def lookup(
    connection: AsyncConnection, workflow: str, request_id: str
) -> tuple[str, RunRow | None]:
    """The tenant's pinned version of ``workflow`` ('' = latest) and its run ``request_id``.

    One query answers both; the run is None when no run was started with ``request_id``.
    """
    query = (
        "SELECT (SELECT version FROM app.workflow_overrides WHERE workflow = :wf), r.* "  # noqa: S608
        "FROM (SELECT 1) AS one LEFT JOIN LATERAL "
        f"(SELECT {_COLUMNS} FROM app.agent_runs WHERE request_id = :r) AS r ON true"
    )
    found = await connection.execute(text(query), {"wf": workflow, "r": request_id or None})
    pinned, *values = found.one()
    return ("" if pinned is None else str(pinned)), (None if values[0] is None else _row(values))


async def get(engine: AsyncEngine, tenant_id: str, run_id: str) -> RunRow | None:
    """One run of the tenant."""
    async with db.tenant_transaction(engine, tenant_id) as connection:
        found = await connection.execute(
            text(f"SELECT {_COLUMNS} FROM app.agent_runs WHERE run_id = CAST(:id AS uuid)"),  # noqa: S608
            {"id": run_id},
        )
        row = found.first()
    return None if row is None else _row(row)


async def insert(
    connection: AsyncConnection,
    *,
    run_id: str,
    tenant_id: str,
    workflow: str,
    version: str,
    input: Mapping[str, Any],
    request_id: str,
    session_id: str,
    user_id: str,
    owner: str,
    lease_s: float,
    started_at: datetime,
) -> None:
    """Insert a RUNNING run leased to ``owner``."""
    await connection.execute(
        text(
            "INSERT INTO app.agent_runs (run_id, tenant_id, workflow, workflow_version, status, "
            "input_data, request_id, session_id, user_id, lease_owner, lease_until, started_at) "
            "VALUES (CAST(:id AS uuid), :tenant, :wf, :ver, 'RUNNING', CAST(:input AS jsonb), "
            ":req, :session, :user, :owner, now() + make_interval(secs => :lease), :began)"
        ),
        {
            "id": run_id, "tenant": tenant_id, "wf": workflow, "ver": version,
            "input": json.dumps(dict(input)), "req": request_id or None, "session": session_id,
            "user": user_id, "owner": owner, "lease": lease_s, "began": started_at,
        },
    )  # fmt: skip


async def finish(
    connection: AsyncConnection,
    *,
    run_id: str,
    tenant_id: str,
    status: str,
    output: Mapping[str, Any],
    metrics: Mapping[str, Any],
    decision_id: str,
    steps: Sequence[Any],
    compensations: Sequence[Any],
) -> None:
    """Record where a run got to; a final status releases the lease."""
    final = status in FINAL
    # One statement: the run's update and its execution record.
    await connection.execute(
        text(
            "WITH run AS (UPDATE app.agent_runs SET status = :status, "
            "output_data = CAST(:out AS jsonb), metrics = CAST(:metrics AS jsonb), "
            "decision_id = :decision, updated_at = now(), "
            "completed_at = CASE WHEN :final THEN now() END, "
            "lease_until = CASE WHEN :final OR :status = 'WAITING_FOR_HUMAN' THEN NULL "
            "ELSE lease_until END WHERE run_id = CAST(:id AS uuid)) "
            "INSERT INTO app.workflow_executions (tenant_id, run_id, steps, compensation, status) "
            "VALUES (:tenant, CAST(:id AS uuid), CAST(:steps AS jsonb), CAST(:comp AS jsonb), "
            ":status)"
        ),
        {
            "status": status, "out": json.dumps(dict(output)), "metrics": json.dumps(dict(metrics)),
            "decision": decision_id, "final": final, "id": run_id, "tenant": tenant_id,
            "steps": json.dumps(list(steps), default=str),
            "comp": json.dumps(list(compensations), default=str),
        },
    )  # fmt: skip


async def lease(
    engine: AsyncEngine,
    tenant_id: str,
    run_id: str,
    owner: str,
    lease_s: float,
    waiting: bool = False,
) -> bool:
    """Take or renew a run's lease; False when another owner holds a live one or it ended.

    A run waiting for a human is leased only with ``waiting`` (ResumeRun takes it on).
    """
    async with db.tenant_transaction(engine, tenant_id) as connection:
        found = await connection.execute(
            text(
                "UPDATE app.agent_runs SET lease_owner = :owner, "
                "lease_until = now() + make_interval(secs => :lease) "
                "WHERE run_id = CAST(:id AS uuid) AND status NOT IN "
                "('SUCCEEDED', 'FAILED', 'COMPENSATED', 'CANCELLED') "
                "AND (:waiting OR status <> 'WAITING_FOR_HUMAN') "
                "AND (lease_owner = :owner OR lease_until IS NULL OR lease_until < now()) "
                "RETURNING 1"
            ),
            {"owner": owner, "lease": lease_s, "id": run_id, "waiting": waiting},
        )
        return found.first() is not None


async def claim(
    engine: AsyncEngine, tenant_id: str, run_id: str, owner: str, lease_s: float
) -> bool:
    """Lease a run to ``owner`` to undo it (COMPENSATING); False when another owner holds it.

    A paused run is taken as well as one whose orchestrator stopped renewing its lease.
    """
    async with db.tenant_transaction(engine, tenant_id) as connection:
        found = await connection.execute(
            text(
                "UPDATE app.agent_runs SET status = 'COMPENSATING', lease_owner = :owner, "
                "lease_until = now() + make_interval(secs => :lease), updated_at = now() "
                "WHERE run_id = CAST(:id AS uuid) AND status NOT IN "
                "('SUCCEEDED', 'FAILED', 'COMPENSATED', 'CANCELLED') "
                "AND (lease_owner = :owner OR lease_until IS NULL OR lease_until < now()) "
                "RETURNING 1"
            ),
            {"owner": owner, "lease": lease_s, "id": run_id},
        )
        return found.first() is not None


async def expired(engine: AsyncEngine, limit: int = 50) -> list[tuple[str, str]]:
    """(tenant, run id) of runs whose orchestrator stopped renewing their lease."""
    async with db.global_transaction(engine) as connection:
        found = await connection.execute(
            text("SELECT tenant_id, run_id::text FROM app.orchestrator_expired_runs(:lim)"),
            {"lim": limit},
        )
        return [(str(tenant), str(run)) for tenant, run in found.all()]


async def page(
    engine: AsyncEngine,
    tenant_id: str,
    *,
    size: int,
    before: tuple[str, str] | None,
    status: str,
    workflow: str,
    session_id: str,
) -> list[RunRow]:
    """A page of the tenant's runs, newest first, after the ``(created_at, run_id)`` cursor."""
    where = ["true"]
    params: dict[str, Any] = {"size": size}
    if before is not None:
        where.append("(created_at, run_id::text) < (:at, :rid)")
        params.update(at=datetime.fromisoformat(before[0]), rid=before[1])
    for column, value in (("status", status), ("workflow", workflow), ("session_id", session_id)):
        if value:
            where.append(f"{column} = :{column}")
            params[column] = value
    async with db.tenant_transaction(engine, tenant_id) as connection:
        found = await connection.execute(
            text(
                f"SELECT {_COLUMNS} FROM app.agent_runs WHERE {' AND '.join(where)} "  # noqa: S608
                "ORDER BY created_at DESC, run_id::text DESC LIMIT :size"
            ),
            params,
        )
        return [_row(row) for row in found.all()]
