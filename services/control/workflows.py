"""Workflow overrides: a tenant's pin of one workflow to a version (no pin runs the latest)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.control import access, audit, names, specs, store
from services.kit import db, errors
from supportmesh.control.v1 import control_service_pb2 as pb
from supportmesh.control.v1 import resources_pb2 as res

_GET = text("SELECT version, updated_at FROM app.workflow_overrides WHERE workflow = :workflow")
_UPSERT = text(
    """
    INSERT INTO app.workflow_overrides (tenant_id, workflow, version)
    VALUES (:tenant, :workflow, :version)
    ON CONFLICT (tenant_id, workflow) DO UPDATE SET version = excluded.version, updated_at = now()
    """
)
_CLEAR = text("DELETE FROM app.workflow_overrides WHERE workflow = :workflow")


def _workflow(name: str, workflow: str) -> None:
    if not specs.WORKFLOW_NAME.match(workflow):
        raise errors.InvalidArgument(
            f"{name} does not name a workflow (lower-case letters, digits, _ and -)", field="name"
        )


async def _current(connection: AsyncConnection, name: str, workflow: str) -> res.WorkflowOverride:
    row = (await connection.execute(_GET, {"workflow": workflow})).first()
    if row is None:
        return res.WorkflowOverride(name=name)
    return res.WorkflowOverride(
        name=name, version=str(row.version), update_time=store.timestamp(row.updated_at)
    )


class WorkflowOverrides:
    """Per-tenant workflow version pins."""

    def __init__(self, engine: AsyncEngine) -> None:
        """Keep pins in ``engine``'s database."""
        self._engine = engine

    async def set(self, request: pb.SetWorkflowOverrideRequest) -> res.WorkflowOverride:
        """Pin, re-pin or (with an empty version) unpin a workflow."""
        tenant_id, workflow = access.child(request.name, names.WORKFLOW_OVERRIDES, write=True)
        _workflow(request.name, workflow)
        if request.version:
            specs.check_semver(request.version, "version")
        async with db.tenant_transaction(self._engine, tenant_id) as connection:
            await store.require_tenant_row(connection, tenant_id, "name")
            if not await audit.replayed(connection, request.name, request.request_id):
                if request.version:
                    params = {"tenant": tenant_id, "workflow": workflow, "version": request.version}
                    await connection.execute(_UPSERT, params)
                else:
                    await connection.execute(_CLEAR, {"workflow": workflow})
                await audit.record(
                    connection,
                    tenant_id,
                    request.name,
                    {"version": request.version or "(unpinned)"},
                    request.request_id,
                )
            return await _current(connection, request.name, workflow)

    async def get(self, request: pb.GetWorkflowOverrideRequest) -> res.WorkflowOverride:
        """A tenant's pin of one workflow; an empty version when unpinned."""
        tenant_id, workflow = access.child(request.name, names.WORKFLOW_OVERRIDES, write=False)
        _workflow(request.name, workflow)
        async with db.tenant_transaction(self._engine, tenant_id) as connection:
            await store.require_tenant_row(connection, tenant_id, "name")
            return await _current(connection, request.name, workflow)
