"""The agent registry of a tenant: versioned AgentManifests naming workflows, tools and tiers."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.control import access, audit, names, paging, plans, registry, specs, store
from services.kit import db, errors
from supportmesh.common.v1 import errors_pb2
from supportmesh.control.v1 import control_service_pb2 as pb
from supportmesh.control.v1 import resources_pb2 as res
from supportmesh.spec.v1 import tier_pb2

_KIND = "agents"


def _agent(tenant_id: str, entry: registry.Entry[res.AgentManifest]) -> res.Agent:
    return res.Agent(
        name=names.child(tenant_id, names.AGENTS, entry.name),
        manifest=entry.spec,
        versions=entry.versions,
        create_time=store.timestamp(entry.create_time),
        update_time=store.timestamp(entry.update_time),
    )


class Agents:
    """Registration and lookup of a tenant's agents."""

    def __init__(self, engine: AsyncEngine) -> None:
        """Keep agents in ``engine``'s database."""
        self._engine = engine
        self._registry = registry.agents()
        self._tools = registry.tools()

    async def register(self, request: pb.RegisterAgentRequest) -> res.Agent:
        """Add a manifest version; its tools must be registered and its plan must allow them."""
        tenant_id = access.tenant(request.parent, write=True, field="parent")
        store.require(request.request_id, "request_id")
        manifest = request.manifest
        specs.validate_agent(manifest)
        async with db.tenant_transaction(self._engine, tenant_id) as connection:
            await store.require_tenant_row(connection, tenant_id, "parent")
            await self._check_allowed(connection, tenant_id, manifest)
            entry, changed = await self._registry.register(
                connection, tenant_id, manifest, "manifest"
            )
            agent = _agent(tenant_id, entry)
            if changed:
                await audit.record(
                    connection,
                    tenant_id,
                    agent.name,
                    {"version": manifest.version, "workflow": manifest.workflow},
                    request.request_id,
                )
            return agent

    async def _check_allowed(
        self, connection: AsyncConnection, tenant_id: str, manifest: res.AgentManifest
    ) -> None:
        wanted = list(manifest.allowed_tools)
        unknown = sorted(set(wanted) - await self._tools.names_with_versions(connection, wanted))
        if unknown:
            raise errors.FailedPrecondition(
                f"tools {unknown} are not registered",
                reason=errors_pb2.ERROR_REASON_TOOL_UNKNOWN,
                field="manifest.allowed_tools",
            )
        limits = await plans.limits(connection, tenant_id)
        barred = sorted(set(wanted) - set(limits.allowed_tools)) if limits.allowed_tools else []
        if barred:
            raise errors.FailedPrecondition(
                f"the tenant's plan does not allow tools {barred}",
                reason=errors_pb2.ERROR_REASON_FEATURE_DISABLED,
                field="manifest.allowed_tools",
            )
        tiers = set(limits.allowed_tiers)
        over = [tier for tier in manifest.allowed_tiers if tiers and tier not in tiers]
        if over:
            raise errors.FailedPrecondition(
                f"the tenant's plan does not allow tiers {[tier_pb2.Tier.Name(t) for t in over]}",
                reason=errors_pb2.ERROR_REASON_FEATURE_DISABLED,
                field="manifest.allowed_tiers",
            )

    async def get(self, request: pb.GetAgentRequest) -> res.Agent:
        """An agent with its latest or requested manifest version."""
        tenant_id, name = access.child(request.name, names.AGENTS, write=False)
        if request.version:
            specs.check_semver(request.version, "version")
        async with db.tenant_transaction(self._engine, tenant_id) as connection:
            entry = await self._registry.get(connection, tenant_id, name, request.version)
        return _agent(tenant_id, entry)

    async def list(self, request: pb.ListAgentsRequest) -> tuple[list[res.Agent], str]:
        """One page of agents by name, each with its latest manifest."""
        tenant_id = access.tenant(request.parent, write=False, field="parent")
        size = paging.page_size(request.page_size)
        after = paging.decode(request.page_token, _KIND, 1)
        async with db.tenant_transaction(self._engine, tenant_id) as connection:
            await store.require_tenant_row(connection, tenant_id, "parent")
            entries = await self._registry.page(connection, after[0] if after else "", size + 1)
        page, token = paging.split(entries, size, _KIND, lambda entry: (entry.name,))
        return [_agent(tenant_id, entry) for entry in page], token
