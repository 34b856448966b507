"""Feature flags: a catalogue in code, plan defaults, and per-tenant overrides in the database.

A flag's default is on when the tenant's plan lists it, else the platform default below;
an override (ON or OFF) replaces the default, and NONE removes the override.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.control import access, audit, names, paging, plans, store
from services.kit import db, errors
from supportmesh.control.v1 import control_service_pb2 as pb
from supportmesh.control.v1 import resources_pb2 as res


@dataclass(frozen=True)
class Flag:
    """One switchable feature and its platform default."""

    key: str
    description: str
    default: bool


CATALOG: tuple[Flag, ...] = tuple(
    sorted(
        (
            Flag("critic_review", "An LLM critic reviews answers before they are sent.", False),
            Flag("experimental_router_bandit", "The router's bandit policy picks tiers.", False),
            Flag("faq", "FAQ answers from the knowledge base.", False),
            Flag("human_handoff", "Conversations can be escalated to a human agent.", True),
            Flag("knowledge_direct_answers", "Answer straight from a confident passage.", True),
            Flag("leads", "Lead capture into the tenant's CRM.", False),
            Flag("orders", "Order lookup and management tools.", False),
            Flag("payments", "Payment tools (charges and refunds).", False),
            Flag("sso", "Single sign-on for the tenant's staff.", False),
            Flag("streaming_responses", "Answers stream token by token.", True),
            Flag("tracking", "Shipment tracking tools.", False),
        ),
        key=lambda flag: flag.key,
    )
)
_BY_KEY = {flag.key: flag for flag in CATALOG}
_KIND = "featureFlags"

_OVERRIDES = text("SELECT flag, enabled, updated_at FROM app.feature_flags")
_UPSERT = text(
    """
    INSERT INTO app.feature_flags (tenant_id, flag, enabled) VALUES (:tenant, :flag, :enabled)
    ON CONFLICT (tenant_id, flag) DO UPDATE SET enabled = excluded.enabled, updated_at = now()
    RETURNING flag, enabled, updated_at
    """
)
_CLEAR = text("DELETE FROM app.feature_flags WHERE flag = :flag")
_OVERRIDE_NAMES = {
    res.FEATURE_FLAG_OVERRIDE_NONE: "NONE",
    res.FEATURE_FLAG_OVERRIDE_ON: "ON",
    res.FEATURE_FLAG_OVERRIDE_OFF: "OFF",
}


def _flag(
    tenant_id: str, flag: Flag, plan_features: frozenset[str], override: Any | None
) -> res.FeatureFlag:
    default = flag.key in plan_features or flag.default
    state = res.FEATURE_FLAG_OVERRIDE_NONE
    updated: datetime | None = None
    if override is not None:
        enabled = bool(override.enabled)
        state = res.FEATURE_FLAG_OVERRIDE_ON if enabled else res.FEATURE_FLAG_OVERRIDE_OFF
        updated = override.updated_at
    return res.FeatureFlag(
        name=names.child(tenant_id, names.FEATURE_FLAGS, flag.key),
        description=flag.description,
        default_enabled=default,
        override=state,
        enabled=default if override is None else bool(override.enabled),
        update_time=store.timestamp(updated),
    )


class FeatureFlags:
    """Flag overrides per tenant, resolved against the catalogue and the plan."""

    def __init__(self, engine: AsyncEngine) -> None:
        """Keep overrides in ``engine``'s database."""
        self._engine = engine

    async def list(self, request: pb.ListFeatureFlagsRequest) -> tuple[list[res.FeatureFlag], str]:
        """One page of every known flag as it applies to the tenant, by key."""
        tenant_id = access.tenant(request.parent, write=False, field="parent")
        size = paging.page_size(request.page_size)
        after = paging.decode(request.page_token, _KIND, 1)
        async with db.tenant_transaction(self._engine, tenant_id) as connection:
            await store.require_tenant_row(connection, tenant_id, "parent")
            features = await plans.features(connection, tenant_id)
            overrides = {row.flag: row for row in (await connection.execute(_OVERRIDES)).all()}
        remaining = [flag for flag in CATALOG if after is None or flag.key > after[0]]
        page, token = paging.split(remaining[: size + 1], size, _KIND, lambda flag: (flag.key,))
        return [_flag(tenant_id, flag, features, overrides.get(flag.key)) for flag in page], token

    async def set(self, request: pb.SetFeatureFlagRequest) -> res.FeatureFlag:
        """Set (ON/OFF) or clear (NONE) the tenant's override of a flag."""
        tenant_id, key = access.child(request.name, names.FEATURE_FLAGS, write=True)
        flag = _BY_KEY.get(key)
        if flag is None:
            raise errors.NotFound(f"{request.name} is not a known flag", field="name")
        if request.override not in _OVERRIDE_NAMES:
            raise errors.InvalidArgument("override must be NONE, ON or OFF", field="override")
        async with db.tenant_transaction(self._engine, tenant_id) as connection:
            await store.require_tenant_row(connection, tenant_id, "name")
            features = await plans.features(connection, tenant_id)
            if await audit.replayed(connection, request.name, request.request_id):
                current = {row.flag: row for row in (await connection.execute(_OVERRIDES)).all()}
                return _flag(tenant_id, flag, features, current.get(key))
            override = None
            if request.override == res.FEATURE_FLAG_OVERRIDE_NONE:
                await connection.execute(_CLEAR, {"flag": key})
            else:
                enabled = request.override == res.FEATURE_FLAG_OVERRIDE_ON
                params = {"tenant": tenant_id, "flag": key, "enabled": enabled}
                override = (await connection.execute(_UPSERT, params)).one()
            result = _flag(tenant_id, flag, features, override)
            await audit.record(
                connection,
                tenant_id,
                result.name,
                {
                    "override": _OVERRIDE_NAMES[request.override],
                    "enabled": str(result.enabled).lower(),
                },
                request.request_id,
            )
            return result
