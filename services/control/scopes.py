"""The scope vocabulary API keys may grant, and the scopes the control plane asks for."""

from __future__ import annotations

from collections.abc import Iterable

from services.kit import errors
from services.kit.tenancy import ADMIN_SCOPE

# Reading control-plane resources (tenant, users, keys, flags, registries, audit log).
CONTROL_READ = "control:read"

VOCABULARY: dict[str, str] = {
    ADMIN_SCOPE: "Everything within the tenant, control-plane changes included.",
    "analytics:read": "Read dashboards and KPIs.",
    "billing:read": "Read usage and invoice previews.",
    "chat:write": "Hold conversations with the tenant's agents.",
    CONTROL_READ: "Read control-plane resources: tenant, users, keys, flags, registries, audit.",
    "knowledge:read": "Search the tenant's knowledge base.",
    "knowledge:write": "Ingest and delete knowledge documents.",
    "router:decide": "Ask the router for a tier decision.",
    "runs:read": "Read agent runs and their steps.",
    "runs:write": "Start, resume and cancel agent runs.",
}


def validate(scopes: Iterable[str], field: str = "scopes") -> list[str]:
    """The requested scopes, deduplicated and sorted; unknown ones are refused."""
    wanted = sorted(set(scopes))
    if not wanted:
        raise errors.InvalidArgument("at least one scope is required", field=field)
    unknown = [scope for scope in wanted if scope not in VOCABULARY]
    if unknown:
        raise errors.InvalidArgument(
            f"unknown scopes {unknown}; known scopes are {sorted(VOCABULARY)}", field=field
        )
    return wanted
