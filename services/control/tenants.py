"""Tenants: creation by the operator (idempotent), reads, paging and masked, etag'd updates."""

from __future__ import annotations

import re
from typing import Any

from google.protobuf import json_format, struct_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.control import access, audit, names, paging, plans, store
from services.kit import db, errors, tenancy
from supportmesh.control.v1 import control_service_pb2 as pb
from supportmesh.control.v1 import resources_pb2 as res

_KIND = "tenants"
_REGION = re.compile(r"^[a-z0-9-]{0,32}$")
_MUTABLE = ("display_name", "plan", "state", "config")
_OPERATOR_ONLY = frozenset({"plan", "state"})
_STATES = {res.TENANT_STATE_ACTIVE: "ACTIVE", res.TENANT_STATE_SUSPENDED: "SUSPENDED"}

_BY_REQUEST = text(
    "SELECT tenant_id, display_name, plan_id, state, data_region, config::text AS config, "
    "version, created_at, updated_at FROM app.tenants WHERE request_id = :request_id"
)
_GET = text(
    "SELECT tenant_id, display_name, plan_id, state, data_region, config::text AS config, "
    "version, created_at, updated_at FROM app.tenants WHERE tenant_id = :tenant"
)
_LOCK = text(
    "SELECT tenant_id, display_name, plan_id, state, data_region, config::text AS config, "
    "version, created_at, updated_at FROM app.tenants WHERE tenant_id = :tenant FOR UPDATE"
)
_INSERT = text(
    """
    INSERT INTO app.tenants (tenant_id, display_name, plan_id, state, data_region, config,
                             request_id)
    VALUES (:tenant, :display_name, :plan, 'ACTIVE', :region, CAST(:config AS jsonb), :request_id)
    ON CONFLICT DO NOTHING
    RETURNING tenant_id, display_name, plan_id, state, data_region, config::text AS config,
              version, created_at, updated_at
    """
)
_UPDATE = text(
    """
    UPDATE app.tenants
    SET display_name = :display_name, plan_id = :plan, state = :state,
        config = CAST(:config AS jsonb), version = version + 1, updated_at = now()
    WHERE tenant_id = :tenant
    RETURNING tenant_id, display_name, plan_id, state, data_region, config::text AS config,
              version, created_at, updated_at
    """
)
_LIST = text(
    """
    SELECT tenant_id, display_name, plan_id, state, data_region, config::text AS config,
           version, created_at, updated_at
    FROM app.tenants
    WHERE (CAST(:state AS text) = '' OR state = CAST(:state AS text))
      AND tenant_id > CAST(:after AS text)
    ORDER BY tenant_id
    LIMIT :limit
    """
)


def _tenant(row: Any) -> res.Tenant:
    tenant = res.Tenant(
        name=names.tenant(str(row.tenant_id)),
        display_name=str(row.display_name),
        plan=names.plan(str(row.plan_id)),
        state=res.TenantState.Value(f"TENANT_STATE_{row.state}"),
        data_region=str(row.data_region),
        create_time=store.timestamp(row.created_at),
        update_time=store.timestamp(row.updated_at),
        etag=store.etag(int(row.version)),
    )
    json_format.Parse(row.config, tenant.config)
    return tenant


def _config_json(config: struct_pb2.Struct) -> str:
    return json_format.MessageToJson(config, indent=None)


def _state(state: res.TenantState.ValueType, field: str) -> str:
    if state not in _STATES:
        raise errors.InvalidArgument(f"{field} must be ACTIVE or SUSPENDED", field=field)
    return _STATES[state]


class Tenants:
    """The tenant repository and its rules."""

    def __init__(self, engine: AsyncEngine) -> None:
        """Keep tenants in ``engine``'s database."""
        self._engine = engine

    async def create(self, request: pb.CreateTenantRequest) -> res.Tenant:
        """Create a tenant; a retry with the same request_id returns the same tenant."""
        access.platform_write()
        tenant_id = request.tenant_id
        if not names.TENANT_ID.match(tenant_id):
            raise errors.InvalidArgument(
                "tenant_id must be 3–63 characters of [a-z0-9-] starting with a letter",
                field="tenant_id",
            )
        store.require(request.request_id, "request_id")
        wanted = request.tenant
        store.require(wanted.display_name, "tenant.display_name")
        plan_id = names.parse_plan(wanted.plan, "tenant.plan")
        if wanted.state == res.TENANT_STATE_SUSPENDED:
            raise errors.InvalidArgument("new tenants start ACTIVE", field="tenant.state")
        if not _REGION.match(wanted.data_region):
            raise errors.InvalidArgument(
                "tenant.data_region must be up to 32 characters of [a-z0-9-]",
                field="tenant.data_region",
            )
        async with store.operator_transaction(self._engine, tenant_id) as connection:
            if (tenant := await self._replay(connection, request)) is not None:
                return tenant
            await plans.require(connection, plan_id, "tenant.plan")
            row = (
                await connection.execute(
                    _INSERT,
                    {
                        "tenant": tenant_id,
                        "display_name": wanted.display_name,
                        "plan": plan_id,
                        "region": wanted.data_region,
                        "config": _config_json(wanted.config),
                        "request_id": request.request_id,
                    },
                )
            ).first()
            if row is None:
                if (tenant := await self._replay(connection, request)) is not None:
                    return tenant
                raise errors.AlreadyExists(f"tenants/{tenant_id} already exists", field="tenant_id")
            tenant = _tenant(row)
            await audit.record(
                connection,
                tenant_id,
                tenant.name,
                {"plan": tenant.plan, "display_name": tenant.display_name},
                request.request_id,
            )
            return tenant

    async def _replay(
        self, connection: AsyncConnection, request: pb.CreateTenantRequest
    ) -> res.Tenant | None:
        row = (await connection.execute(_BY_REQUEST, {"request_id": request.request_id})).first()
        if row is None:
            return None
        if row.tenant_id != request.tenant_id:
            raise errors.InvalidArgument(
                "request_id was already used to create another tenant", field="request_id"
            )
        return _tenant(row)

    async def get(self, request: pb.GetTenantRequest) -> res.Tenant:
        """One tenant."""
        tenant_id = access.tenant(request.name, write=False)
        async with db.tenant_transaction(self._engine, tenant_id) as connection:
            row = (await connection.execute(_GET, {"tenant": tenant_id})).first()
        if row is None:
            raise errors.NotFound(f"{request.name} not found", field="name")
        return _tenant(row)

    async def list(self, request: pb.ListTenantsRequest) -> tuple[list[res.Tenant], str]:
        """One page of tenants by name: all for the operator, else the caller's own."""
        access.platform_read()
        size = paging.page_size(request.page_size)
        after = paging.decode(request.page_token, _KIND, 1)
        state = (
            "" if request.state == res.TENANT_STATE_UNSPECIFIED else _state(request.state, "state")
        )
        params = {"state": state, "after": after[0] if after else "", "limit": size + 1}
        if access.is_platform_admin():
            async with db.platform_transaction(self._engine) as connection:
                rows = (await connection.execute(_LIST, params)).all()
        else:
            async with db.tenant_transaction(self._engine, access.own_tenant()) as connection:
                rows = (await connection.execute(_LIST, params)).all()
        page, token = paging.split(rows, size, _KIND, lambda row: (str(row.tenant_id),))
        return [_tenant(row) for row in page], token

    async def update(self, request: pb.UpdateTenantRequest) -> res.Tenant:
        """Change the masked fields; plan and state are the operator's to change."""
        wanted = request.tenant
        tenant_id = access.tenant(wanted.name, write=True, field="tenant.name")
        paths = store.mask_paths(request.update_mask, _MUTABLE)
        if _OPERATOR_ONLY.intersection(paths):
            tenancy.require_platform_admin()
        if "display_name" in paths:
            store.require(wanted.display_name, "tenant.display_name")
        plan_id = names.parse_plan(wanted.plan, "tenant.plan") if "plan" in paths else ""
        state = _state(wanted.state, "tenant.state") if "state" in paths else ""
        name = names.tenant(tenant_id)
        async with db.tenant_transaction(self._engine, tenant_id) as connection:
            replay = await audit.replayed(connection, name, request.request_id)
            row = (
                await connection.execute(_GET if replay else _LOCK, {"tenant": tenant_id})
            ).first()
            if row is None:
                raise errors.NotFound(f"{name} not found", field="tenant.name")
            if replay:
                return _tenant(row)
            store.check_etag(wanted.etag, int(row.version), "tenant.etag")
            if plan_id:
                await plans.require(connection, plan_id, "tenant.plan")
            values = {
                "tenant": tenant_id,
                "display_name": wanted.display_name
                if "display_name" in paths
                else row.display_name,
                "plan": plan_id or row.plan_id,
                "state": state or row.state,
                "config": _config_json(wanted.config) if "config" in paths else row.config,
            }
            updated = _tenant((await connection.execute(_UPDATE, values)).one())
            changes = {"update_mask": ",".join(paths)}
            changes.update(
                {path: values[path] for path in ("display_name", "state") if path in paths}
            )
            if plan_id:
                changes["plan"] = names.plan(plan_id)
            await audit.record(connection, tenant_id, name, changes, request.request_id)
            return updated
