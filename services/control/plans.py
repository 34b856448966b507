"""Plans: the commercial packages on offer, stored with their limits and prices as proto JSON."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.control import access, names, paging
from services.kit import db, errors
from supportmesh.control.v1 import control_service_pb2 as pb
from supportmesh.control.v1 import resources_pb2 as res

_KIND = "plans"
_SELECT_ALL = text(
    "SELECT plan_id, display_name, description, limits::text AS limits, "
    "pricing::text AS pricing, features FROM app.plans"
)
_EXISTS = text("SELECT 1 FROM app.plans WHERE plan_id = :plan")
_LIMITS = text(
    "SELECT p.limits::text FROM app.tenants t JOIN app.plans p ON p.plan_id = t.plan_id "
    "WHERE t.tenant_id = :tenant"
)
_FEATURES = text(
    "SELECT p.features FROM app.tenants t JOIN app.plans p ON p.plan_id = t.plan_id "
    "WHERE t.tenant_id = :tenant"
)


def _plan(row: Any) -> res.Plan:
    plan = res.Plan(
        name=names.plan(str(row.plan_id)),
        display_name=str(row.display_name),
        description=str(row.description),
        features=list(row.features),
    )
    json_format.Parse(row.limits, plan.limits, ignore_unknown_fields=True)
    json_format.Parse(row.pricing, plan.pricing, ignore_unknown_fields=True)
    return plan


async def exists(connection: AsyncConnection, plan_id: str) -> bool:
    """Whether ``plans/{plan_id}`` is on offer."""
    return await connection.scalar(_EXISTS, {"plan": plan_id}) is not None


async def require(connection: AsyncConnection, plan_id: str, field: str) -> None:
    """FAILED_PRECONDITION unless the plan exists."""
    if not await exists(connection, plan_id):
        raise errors.FailedPrecondition(f"{names.plan(plan_id)} does not exist", field=field)


async def features(connection: AsyncConnection, tenant_id: str) -> frozenset[str]:
    """Feature flag keys the tenant's plan switches on."""
    found = await connection.scalar(_FEATURES, {"tenant": tenant_id})
    return frozenset(found or ())


async def limits(connection: AsyncConnection, tenant_id: str) -> res.PlanLimits:
    """The limits of the tenant's plan (empty when the tenant is unknown)."""
    found = await connection.scalar(_LIMITS, {"tenant": tenant_id})
    limits = res.PlanLimits()
    if found:
        json_format.Parse(found, limits, ignore_unknown_fields=True)
    return limits


class Plans:
    """Read access to the plan catalogue."""

    def __init__(self, engine: AsyncEngine) -> None:
        """Serve plans from ``engine``."""
        self._engine = engine

    async def _all(self) -> list[res.Plan]:
        # The catalogue is a handful of rows: sort by price in Python, page over the result.
        async with db.global_transaction(self._engine) as connection:
            rows = (await connection.execute(_SELECT_ALL)).all()
        plans = [_plan(row) for row in rows]
        return sorted(plans, key=lambda plan: (plan.pricing.monthly_fee_usd, plan.name))

    async def get(self, request: pb.GetPlanRequest) -> res.Plan:
        """One plan by name."""
        access.platform_read()
        names.parse_plan(request.name)
        for plan in await self._all():
            if plan.name == request.name:
                return plan
        raise errors.NotFound(f"{request.name} not found", field="name")

    async def list(self, request: pb.ListPlansRequest) -> tuple[list[res.Plan], str]:
        """One page of plans, cheapest first."""
        access.platform_read()
        size = paging.page_size(request.page_size)
        after = paging.decode(request.page_token, _KIND, 1)
        plans = await self._all()
        if after is not None:
            names_in_order = [plan.name for plan in plans]
            if after[0] not in names_in_order:
                raise errors.InvalidArgument("page_token is stale", field="page_token")
            plans = plans[names_in_order.index(after[0]) + 1 :]
        return paging.split(plans[: size + 1], size, _KIND, lambda plan: (plan.name,))
