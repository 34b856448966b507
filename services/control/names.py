"""Resource names of the control plane (AIP-122): parsing and formatting in one place."""

from __future__ import annotations

import re

from services.kit import errors

TENANT_ID = re.compile(r"^[a-z][a-z0-9-]{2,62}$")
# One path segment of a child resource: tool names carry dots, flag keys underscores.
_SEGMENT = r"([A-Za-z0-9][A-Za-z0-9._-]{0,127})"
_TENANT = r"tenants/([a-z][a-z0-9-]{2,62})"
_TENANT_NAME = re.compile(f"^{_TENANT}$")
_PLAN_NAME = re.compile(f"^plans/{_SEGMENT}$")
_POLICY_NAME = re.compile(f"^policyVersions/{_SEGMENT}$")
PLATFORM_DEGRADE_SWITCHES = "degradeSwitches"

USERS = "users"
API_KEYS = "apiKeys"
FEATURE_FLAGS = "featureFlags"
TOOLS = "tools"
AGENTS = "agents"
WORKFLOW_OVERRIDES = "workflowOverrides"
AUDIT_LOGS = "auditLogs"


def tenant(tenant_id: str) -> str:
    """``tenants/{tenant}``."""
    return f"tenants/{tenant_id}"


def child(tenant_id: str, collection: str, child_id: str) -> str:
    """``tenants/{tenant}/{collection}/{id}``."""
    return f"tenants/{tenant_id}/{collection}/{child_id}"


def plan(plan_id: str) -> str:
    """``plans/{plan}``."""
    return f"plans/{plan_id}"


def policy_version(version: str) -> str:
    """``policyVersions/{version}``."""
    return f"policyVersions/{version}"


def degrade_switches(tenant_id: str | None) -> str:
    """The switches' name: platform-wide for ``None``, else the tenant's."""
    if tenant_id is None:
        return PLATFORM_DEGRADE_SWITCHES
    return f"tenants/{tenant_id}/degradeSwitches"


def _invalid(field: str, expected: str) -> errors.InvalidArgument:
    return errors.InvalidArgument(f"{field} must be {expected}", field=field)


def parse_tenant(name: str, field: str = "name") -> str:
    """The tenant id of ``tenants/{tenant}``."""
    match = _TENANT_NAME.match(name)
    if match is None:
        raise _invalid(field, "tenants/{tenant}")
    return match.group(1)


def parse_child(name: str, collection: str, field: str = "name") -> tuple[str, str]:
    """``(tenant, id)`` of ``tenants/{tenant}/{collection}/{id}``."""
    match = re.match(f"^{_TENANT}/{re.escape(collection)}/{_SEGMENT}$", name)
    if match is None:
        raise _invalid(field, f"tenants/{{tenant}}/{collection}/{{id}}")
    return match.group(1), match.group(2)


def parse_plan(name: str, field: str = "name") -> str:
    """The plan id of ``plans/{plan}``."""
    match = _PLAN_NAME.match(name)
    if match is None:
        raise _invalid(field, "plans/{plan}")
    return match.group(1)


def parse_policy_version(name: str, field: str = "name") -> str:
    """The version of ``policyVersions/{version}``."""
    match = _POLICY_NAME.match(name)
    if match is None:
        raise _invalid(field, "policyVersions/{version}")
    return match.group(1)


def parse_degrade_switches(name: str, field: str = "name") -> str | None:
    """``None`` for the platform-wide switches, else the tenant whose switches are named."""
    if name == PLATFORM_DEGRADE_SWITCHES:
        return None
    match = re.match(f"^{_TENANT}/degradeSwitches$", name)
    if match is None:
        raise _invalid(field, "degradeSwitches or tenants/{tenant}/degradeSwitches")
    return match.group(1)
