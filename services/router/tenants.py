"""What a tenant's plan, feature flags and degrade switches let the router do, cached.

Read in one statement inside a tenant transaction (row-level security admits only that
tenant's switch and flag rows): plan limits through the SECURITY DEFINER function
``app.auth_tenant_limits``, the tenant's and the platform's ``prefer_slm_tiers`` switches,
and the tenant's ``router_*`` flag overrides. Recognised flags: ``router_exploration``
(default on; off stops bandit exploration) and ``router_quality_first`` (default off; on
quadruples λ). λ (USD per wrong answer) is the plan's ``routerErrorCostUsd`` limit when
present, else the router's per-plan setting.

When the database is not configured every tier is allowed at the default λ. When it fails,
the last value read is kept (see :class:`services.kit.ttlcache.TtlCache`); a tenant never
read yet gets the same defaults and the reason says so — the router never fails a request
because its configuration store is down.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import db
from services.kit.ttlcache import TtlCache
from supportmesh.spec.v1 import tier_pb2 as pb

_log = logging.getLogger("supportmesh.router.tenants")

ALL_TIERS = (pb.SLM_A, pb.SLM_B, pb.LLM)
_TIER_NAMES = frozenset(pb.Tier.keys())
QUALITY_FIRST_FACTOR = 4.0
# The longest a decision waits for a tenant's configuration on a cache miss.
LOAD_TIMEOUT_S = 0.5

_QUERY = text(
    """
    SELECT l.plan_id, l.plan_limits,
      coalesce((SELECT prefer_slm_tiers FROM app.degrade_switches LIMIT 1), false) AS tenant_slm,
      coalesce((SELECT prefer_slm_tiers FROM app.platform_degrade_switches LIMIT 1), false)
        AS platform_slm,
      coalesce((SELECT jsonb_object_agg(flag, enabled) FROM app.feature_flags
                WHERE flag LIKE 'router\\_%'), '{}'::jsonb) AS flags
    FROM (SELECT 1) AS one LEFT JOIN app.auth_tenant_limits(:tenant) AS l ON true
    """
)


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    """The router-relevant configuration of one tenant."""

    allowed_tiers: tuple[int, ...]
    error_cost_usd: float
    prefer_slm: bool
    explore: bool
    plan_id: str
    source: str  # "database", "default" or "unavailable"


def _allowed(limits: Mapping[str, Any]) -> tuple[int, ...]:
    names = limits.get("allowedTiers") or []
    tiers = tuple(sorted({pb.Tier.Value(n) for n in names if n in _TIER_NAMES} - {0}))
    # An empty list means every tier (PlanLimits.allowed_tiers).
    return tiers or ALL_TIERS


def policy_from_row(
    row: Mapping[str, Any] | None, error_costs: Mapping[str, float], default_cost: float
) -> TenantPolicy:
    """Interpret one result row of the tenant query."""
    if row is None:
        return TenantPolicy(ALL_TIERS, default_cost, False, True, "", "default")
    limits = row["plan_limits"] or {}
    if isinstance(limits, str):
        limits = json.loads(limits)
    flags = row["flags"] or {}
    if isinstance(flags, str):
        flags = json.loads(flags)
    plan = row["plan_id"] or ""
    cost = float(limits.get("routerErrorCostUsd", error_costs.get(plan, default_cost)))
    if flags.get("router_quality_first") is True:
        cost *= QUALITY_FIRST_FACTOR
    return TenantPolicy(
        allowed_tiers=_allowed(limits),
        error_cost_usd=cost,
        prefer_slm=bool(row["tenant_slm"] or row["platform_slm"]),
        explore=flags.get("router_exploration", True) is not False,
        plan_id=plan,
        source="database",
    )


class TenantPolicies:
    """Cached :class:`TenantPolicy` per tenant, read from PostgreSQL."""

    def __init__(
        self,
        engine: AsyncEngine | None,
        *,
        ttl_s: float,
        error_costs: Mapping[str, float],
        default_cost: float,
    ) -> None:
        """Read through ``engine`` (None: no database configured) and cache for ``ttl_s``."""
        self._engine = engine
        self._error_costs = dict(error_costs)
        self._default_cost = default_cost
        self._cache: TtlCache[str, TenantPolicy] = TtlCache(self._load, ttl_s, max_entries=50_000)

    async def get(self, tenant: str) -> TenantPolicy:
        """The tenant's policy; defaults (with the reason in ``source``) when unreadable."""
        if self._engine is None or not tenant:
            return policy_from_row(None, self._error_costs, self._default_cost)
        return await self._cache.get(tenant)

    def invalidate(self, tenant: str) -> None:
        """Forget a tenant's cached policy (tests, or after a known change)."""
        self._cache.invalidate(tenant)

    async def _load(self, tenant: str) -> TenantPolicy:
        try:
            async with asyncio.timeout(LOAD_TIMEOUT_S):
                return await self._read(tenant)
        except Exception:
            if self._cache.peek(tenant) is not None:
                raise  # the cache keeps serving the last policy read
            _log.warning("tenant policy unreadable; using defaults", exc_info=True)
            # Cached like a real answer: an outage costs one timeout per TTL per tenant.
            fallback = policy_from_row(None, self._error_costs, self._default_cost)
            return dataclasses.replace(fallback, source="unavailable")

    async def _read(self, tenant: str) -> TenantPolicy:
        assert self._engine is not None
        async with db.tenant_transaction(self._engine, tenant) as connection:
            result = await connection.execute(_QUERY, {"tenant": tenant})
            row = result.mappings().first()
        if row is None or row["plan_id"] is None:
            return policy_from_row(None, self._error_costs, self._default_cost)
        return policy_from_row(dict(row), self._error_costs, self._default_cost)

    async def aclose(self) -> None:
        """Stop background reloads."""
        await self._cache.aclose()
