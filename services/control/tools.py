"""The tool registry of a tenant: versioned ToolSpecs the workflows may call."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from services.control import access, audit, names, paging, registry, specs, store
from services.kit import db, errors
from supportmesh.common.v1 import errors_pb2
from supportmesh.control.v1 import control_service_pb2 as pb
from supportmesh.control.v1 import resources_pb2 as res
from supportmesh.spec.v1 import tool_pb2

_KIND = "tools"


def _tool(tenant_id: str, entry: registry.Entry[tool_pb2.ToolSpec]) -> res.Tool:
    return res.Tool(
        name=names.child(tenant_id, names.TOOLS, entry.name),
        spec=entry.spec,
        versions=entry.versions,
        create_time=store.timestamp(entry.create_time),
        update_time=store.timestamp(entry.update_time),
    )


class Tools:
    """Registration and lookup of a tenant's tools."""

    def __init__(self, engine: AsyncEngine) -> None:
        """Keep tools in ``engine``'s database."""
        self._engine = engine
        self._registry = registry.tools()

    async def register(self, request: pb.RegisterToolRequest) -> res.Tool:
        """Add a version; its compensation tool must already be registered."""
        tenant_id = access.tenant(request.parent, write=True, field="parent")
        store.require(request.request_id, "request_id")
        spec = request.spec
        specs.validate_tool(spec)
        async with db.tenant_transaction(self._engine, tenant_id) as connection:
            await store.require_tenant_row(connection, tenant_id, "parent")
            if spec.compensation_tool:
                known = await self._registry.names_with_versions(
                    connection, [spec.compensation_tool]
                )
                if not known:
                    raise errors.FailedPrecondition(
                        f"compensation tool {spec.compensation_tool} is not registered",
                        reason=errors_pb2.ERROR_REASON_TOOL_UNKNOWN,
                        field="spec.compensation_tool",
                    )
            entry, changed = await self._registry.register(connection, tenant_id, spec, "spec")
            tool = _tool(tenant_id, entry)
            if changed:
                side_effect = tool_pb2.SideEffect.Name(spec.side_effect)
                await audit.record(
                    connection,
                    tenant_id,
                    tool.name,
                    {"version": spec.version, "side_effect": side_effect},
                    request.request_id,
                )
            return tool

    async def get(self, request: pb.GetToolRequest) -> res.Tool:
        """A tool with its latest or requested version."""
        tenant_id, name = access.child(request.name, names.TOOLS, write=False)
        if request.version:
            specs.check_semver(request.version, "version")
        async with db.tenant_transaction(self._engine, tenant_id) as connection:
            entry = await self._registry.get(connection, tenant_id, name, request.version)
        return _tool(tenant_id, entry)

    async def list(self, request: pb.ListToolsRequest) -> tuple[list[res.Tool], str]:
        """One page of tools by name, each with its latest version."""
        tenant_id = access.tenant(request.parent, write=False, field="parent")
        size = paging.page_size(request.page_size)
        after = paging.decode(request.page_token, _KIND, 1)
        async with db.tenant_transaction(self._engine, tenant_id) as connection:
            await store.require_tenant_row(connection, tenant_id, "parent")
            entries = await self._registry.page(connection, after[0] if after else "", size + 1)
        page, token = paging.split(entries, size, _KIND, lambda entry: (entry.name,))
        return [_tool(tenant_id, entry) for entry in page], token
