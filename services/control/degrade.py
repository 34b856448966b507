"""Degrade switches: platform-wide and per tenant; a switch is in force when either is on."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.control import access, audit, names, store
from services.kit import db, errors
from supportmesh.control.v1 import control_service_pb2 as pb
from supportmesh.control.v1 import resources_pb2 as res

SWITCHES = ("prefer_slm_tiers", "shrink_context", "disable_critique")
_MUTABLE = (*SWITCHES, "reason")
_MAX_REASON = 500

_PLATFORM = text(
    "SELECT prefer_slm_tiers, shrink_context, disable_critique, reason, version, updated_at "
    "FROM app.platform_degrade_switches"
)
_PLATFORM_LOCK = text(
    "SELECT prefer_slm_tiers, shrink_context, disable_critique, reason, version, updated_at "
    "FROM app.platform_degrade_switches FOR UPDATE"
)
_PLATFORM_UPDATE = text(
    """
    UPDATE app.platform_degrade_switches
    SET prefer_slm_tiers = :prefer_slm_tiers, shrink_context = :shrink_context,
        disable_critique = :disable_critique, reason = :reason, version = version + 1,
        updated_at = now()
    RETURNING prefer_slm_tiers, shrink_context, disable_critique, reason, version, updated_at
    """
)
_TENANT = text(
    "SELECT prefer_slm_tiers, shrink_context, disable_critique, reason, version, updated_at "
    "FROM app.degrade_switches"
)
_TENANT_PLACEHOLDER = text(
    "INSERT INTO app.degrade_switches (tenant_id, version) VALUES (:tenant, 0) "
    "ON CONFLICT (tenant_id) DO NOTHING"
)
_TENANT_LOCK = text(
    "SELECT prefer_slm_tiers, shrink_context, disable_critique, reason, version, updated_at "
    "FROM app.degrade_switches FOR UPDATE"
)
_TENANT_UPDATE = text(
    """
    UPDATE app.degrade_switches
    SET prefer_slm_tiers = :prefer_slm_tiers, shrink_context = :shrink_context,
        disable_critique = :disable_critique, reason = :reason, version = version + 1,
        updated_at = now()
    RETURNING prefer_slm_tiers, shrink_context, disable_critique, reason, version, updated_at
    """
)


def _switches(name: str, row: Any | None) -> res.DegradeSwitches:
    if row is None:  # never set: everything off, version 0
        return res.DegradeSwitches(name=name, etag=store.etag(0))
    return res.DegradeSwitches(
        name=name,
        prefer_slm_tiers=bool(row.prefer_slm_tiers),
        shrink_context=bool(row.shrink_context),
        disable_critique=bool(row.disable_critique),
        reason=str(row.reason),
        update_time=store.timestamp(row.updated_at),
        etag=store.etag(int(row.version)),
    )


def effective(platform: res.DegradeSwitches, tenant: res.DegradeSwitches) -> res.DegradeSwitches:
    """The switches in force for a tenant: each on when on platform-wide or for the tenant."""
    result = res.DegradeSwitches(
        name=tenant.name,
        prefer_slm_tiers=platform.prefer_slm_tiers or tenant.prefer_slm_tiers,
        shrink_context=platform.shrink_context or tenant.shrink_context,
        disable_critique=platform.disable_critique or tenant.disable_critique,
        reason="; ".join(reason for reason in (platform.reason, tenant.reason) if reason),
    )
    stamps = [s for s in (platform, tenant) if s.HasField("update_time")]
    if stamps:
        latest = max(stamps, key=lambda s: s.update_time.ToNanoseconds())
        result.update_time.CopyFrom(latest.update_time)
    return result


def _values(
    current: res.DegradeSwitches, wanted: res.DegradeSwitches, paths: list[str]
) -> dict[str, Any]:
    source = {path: (wanted if path in paths else current) for path in _MUTABLE}
    values: dict[str, Any] = {path: getattr(source[path], path) for path in _MUTABLE}
    return values


class DegradeSwitches:
    """Reads and masked, etag'd updates of the degrade switches."""

    def __init__(self, engine: AsyncEngine) -> None:
        """Keep switches in ``engine``'s database."""
        self._engine = engine

    async def get(
        self, request: pb.GetDegradeSwitchesRequest
    ) -> tuple[res.DegradeSwitches, res.DegradeSwitches]:
        """The named switches as set, and as in force."""
        tenant_id = names.parse_degrade_switches(request.name)
        if tenant_id is None:
            access.platform_read()
            async with db.global_transaction(self._engine) as connection:
                platform = await self._platform(connection)
            return platform, platform
        access.tenant(names.tenant(tenant_id), write=False)
        async with db.tenant_transaction(self._engine, tenant_id) as connection:
            await store.require_tenant_row(connection, tenant_id, "name")
            platform = await self._platform(connection)
            row = (await connection.execute(_TENANT)).first()
        tenant = _switches(request.name, row)
        return tenant, effective(platform, tenant)

    async def _platform(self, connection: AsyncConnection) -> res.DegradeSwitches:
        row = (await connection.execute(_PLATFORM)).first()
        return _switches(names.PLATFORM_DEGRADE_SWITCHES, row)

    async def update(self, request: pb.UpdateDegradeSwitchesRequest) -> res.DegradeSwitches:
        """Flip the masked switches; the platform-wide ones are the operator's."""
        wanted = request.degrade_switches
        tenant_id = names.parse_degrade_switches(wanted.name, "degrade_switches.name")
        paths = store.mask_paths(request.update_mask, _MUTABLE)
        if len(wanted.reason) > _MAX_REASON:
            raise errors.InvalidArgument(
                f"degrade_switches.reason is longer than {_MAX_REASON} characters",
                field="degrade_switches.reason",
            )
        if tenant_id is None:
            return await self._update_platform(wanted, paths)
        access.tenant(names.tenant(tenant_id), write=True, field="degrade_switches.name")
        async with db.tenant_transaction(self._engine, tenant_id) as connection:
            await store.require_tenant_row(connection, tenant_id, "degrade_switches.name")
            if await audit.replayed(connection, wanted.name, request.request_id):
                return _switches(wanted.name, (await connection.execute(_TENANT)).first())
            await connection.execute(_TENANT_PLACEHOLDER, {"tenant": tenant_id})
            locked = (await connection.execute(_TENANT_LOCK)).one()
            store.check_etag(wanted.etag, int(locked.version), "degrade_switches.etag")
            current = _switches(wanted.name, locked)
            values = _values(current, wanted, paths)
            row = (await connection.execute(_TENANT_UPDATE, values)).one()
            await audit.record(
                connection, tenant_id, wanted.name, _changes(values, paths), request.request_id
            )
            return _switches(wanted.name, row)

    async def _update_platform(
        self, wanted: res.DegradeSwitches, paths: list[str]
    ) -> res.DegradeSwitches:
        access.platform_write()
        async with db.global_transaction(self._engine) as connection:
            row = (await connection.execute(_PLATFORM_LOCK)).one()
            current = _switches(names.PLATFORM_DEGRADE_SWITCHES, row)
            store.check_etag(wanted.etag, int(row.version), "degrade_switches.etag")
            values = _values(current, wanted, paths)
            updated = (await connection.execute(_PLATFORM_UPDATE, values)).one()
            await audit.record_platform(
                connection, names.PLATFORM_DEGRADE_SWITCHES, _changes(values, paths)
            )
        return _switches(names.PLATFORM_DEGRADE_SWITCHES, updated)


def _changes(values: dict[str, Any], paths: list[str]) -> dict[str, str]:
    changes = {"update_mask": ",".join(paths)}
    for path in paths:
        value = values[path]
        changes[path] = str(value).lower() if isinstance(value, bool) else str(value)
    return changes
