"""Which scope each gRPC method needs: one table, every method of every service in it.

The edge refuses any method missing from the table (deny by default), so a new RPC is
unreachable from outside until someone decides its scope here; a unit test holds the table
equal to the methods in the descriptor set. Scope ``admin`` grants every tenant method;
``platform:admin`` methods are the platform operator's alone, whatever a tenant's scopes.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from services.kit.tenancy import ADMIN_SCOPE, PLATFORM_ADMIN_SCOPE

# Answered without a credential (ext_authz is switched off for their routes).
PUBLIC: Final = "public"
# Served to the mesh only: never through the edge, not even for the platform operator.
INTERNAL: Final = "internal"
CONTROL_READ: Final = "control:read"

_ANALYTICS = "supportmesh.analytics.v1.AnalyticsService"
_BILLING = "supportmesh.billing.v1.BillingService"
_CONTROL = "supportmesh.control.v1.ControlService"
_AUTH = "supportmesh.edge.v1.AuthService"
_KNOWLEDGE = "supportmesh.knowledge.v1.KnowledgeService"
_ORCHESTRATOR = "supportmesh.orchestrator.v1.OrchestratorService"
_REALTIME = "supportmesh.realtime.v1.RealtimeService"
_ROUTER = "supportmesh.router.v1.RouterService"

# Keyed by the HTTP/2 path of the method, which is what ext_authz sees for REST and gRPC alike.
METHOD_SCOPES: Final[dict[str, str]] = {
    f"/{_ANALYTICS}/GetTenantKpis": "analytics:read",
    f"/{_BILLING}/GetUsage": "billing:read",
    f"/{_BILLING}/ListUsageRecords": "billing:read",
    f"/{_BILLING}/PreviewInvoice": "billing:read",
    f"/{_CONTROL}/CreateTenant": PLATFORM_ADMIN_SCOPE,
    f"/{_CONTROL}/GetTenant": CONTROL_READ,
    f"/{_CONTROL}/ListTenants": CONTROL_READ,
    f"/{_CONTROL}/UpdateTenant": ADMIN_SCOPE,
    f"/{_CONTROL}/GetPlan": CONTROL_READ,
    f"/{_CONTROL}/ListPlans": CONTROL_READ,
    f"/{_CONTROL}/CreateUser": ADMIN_SCOPE,
    f"/{_CONTROL}/ListUsers": CONTROL_READ,
    f"/{_CONTROL}/DeleteUser": ADMIN_SCOPE,
    f"/{_CONTROL}/CreateApiKey": ADMIN_SCOPE,
    f"/{_CONTROL}/ListApiKeys": CONTROL_READ,
    f"/{_CONTROL}/RevokeApiKey": ADMIN_SCOPE,
    f"/{_CONTROL}/ListFeatureFlags": CONTROL_READ,
    f"/{_CONTROL}/SetFeatureFlag": ADMIN_SCOPE,
    f"/{_CONTROL}/GetDegradeSwitches": CONTROL_READ,
    # Tenant admins flip their own switches; the control plane keeps platform-wide ones to
    # the operator.
    f"/{_CONTROL}/UpdateDegradeSwitches": ADMIN_SCOPE,
    f"/{_CONTROL}/RegisterTool": ADMIN_SCOPE,
    f"/{_CONTROL}/GetTool": CONTROL_READ,
    f"/{_CONTROL}/ListTools": CONTROL_READ,
    f"/{_CONTROL}/RegisterAgent": ADMIN_SCOPE,
    f"/{_CONTROL}/GetAgent": CONTROL_READ,
    f"/{_CONTROL}/ListAgents": CONTROL_READ,
    f"/{_CONTROL}/RegisterPolicyVersion": PLATFORM_ADMIN_SCOPE,
    f"/{_CONTROL}/ListPolicyVersions": CONTROL_READ,
    f"/{_CONTROL}/UpdatePolicyVersion": PLATFORM_ADMIN_SCOPE,
    f"/{_CONTROL}/SetWorkflowOverride": ADMIN_SCOPE,
    f"/{_CONTROL}/GetWorkflowOverride": CONTROL_READ,
    f"/{_CONTROL}/ListAuditLogs": CONTROL_READ,
    f"/{_AUTH}/IssueToken": PUBLIC,
    f"/{_AUTH}/GetJwks": PUBLIC,
    f"/{_AUTH}/Introspect": INTERNAL,
    f"/{_KNOWLEDGE}/IngestDocument": "knowledge:write",
    f"/{_KNOWLEDGE}/BatchIngestDocuments": "knowledge:write",
    f"/{_KNOWLEDGE}/GetDocument": "knowledge:read",
    f"/{_KNOWLEDGE}/ListDocuments": "knowledge:read",
    f"/{_KNOWLEDGE}/DeleteDocument": "knowledge:write",
    f"/{_KNOWLEDGE}/Search": "knowledge:read",
    f"/{_KNOWLEDGE}/GetKnowledgeSettings": "knowledge:read",
    f"/{_KNOWLEDGE}/UpdateKnowledgeSettings": "knowledge:write",
    f"/{_ORCHESTRATOR}/StartRun": "runs:write",
    f"/{_ORCHESTRATOR}/GetRun": "runs:read",
    f"/{_ORCHESTRATOR}/ListRuns": "runs:read",
    f"/{_ORCHESTRATOR}/CancelRun": "runs:write",
    f"/{_ORCHESTRATOR}/ResumeRun": "runs:write",
    f"/{_ORCHESTRATOR}/SendChatMessage": "chat:write",
    f"/{_ORCHESTRATOR}/StreamRun": "runs:read",
    f"/{_REALTIME}/Chat": "chat:write",
    f"/{_REALTIME}/StreamChat": "chat:write",
    f"/{_ROUTER}/Decide": "router:decide",
    # Outcome feedback comes from the same callers that ask for decisions.
    f"/{_ROUTER}/Feedback": "router:decide",
}


# Scopes a tenant credential can hold: what some method needs, plus admin.
TENANT_SCOPES: Final = frozenset(
    {ADMIN_SCOPE, *METHOD_SCOPES.values()} - {PUBLIC, INTERNAL, PLATFORM_ADMIN_SCOPE}
)


# What a user's role lets a key acting for that user hold (``app.users.role``). A key with no
# user is bounded by its own scopes alone; a key of a user holds at most its role's scopes,
# whatever it was created with, so a viewer's key never writes.
_READ = frozenset({CONTROL_READ, "analytics:read", "billing:read", "knowledge:read", "runs:read"})
ROLE_SCOPES: Final[dict[str, frozenset[str]]] = {
    "VIEWER": _READ,
    "AGENT": _READ | {"chat:write", "runs:write", "router:decide", "knowledge:write"},
    "ADMIN": TENANT_SCOPES,
}


def bounded_by_role(held: Collection[str], role: str) -> tuple[str, ...]:
    """The scopes a key holding ``held`` has when it acts for a user with ``role`` ('' = none).

    An unknown role grants nothing (deny by default). A non-admin role's ``admin`` scope
    is dropped along with every other scope the role does not allow.
    """
    if not role:
        return tuple(held)
    allowed = ROLE_SCOPES.get(role, frozenset())
    return tuple(scope for scope in held if scope in allowed)


def required_scope(method: str) -> str | None:
    """The scope ``method`` (``/pkg.Service/Method``) needs, or None when it is not exposed."""
    return METHOD_SCOPES.get(method)


def grants(held: Collection[str], required: str, *, platform_admin: bool) -> bool:
    """Whether a credential holding ``held`` may call a method that needs ``required``."""
    if required == INTERNAL:
        return False
    if platform_admin or required == PUBLIC:
        return True
    if required == PLATFORM_ADMIN_SCOPE:
        return False
    return required in held or ADMIN_SCOPE in held


def narrow(held: Collection[str], wanted: Collection[str]) -> list[str] | None:
    """The scopes of a token asked for ``wanted`` by a key holding ``held``; None if wider.

    Empty ``wanted`` means all of the key's scopes. A key with ``admin`` may hand out any
    narrower tenant scope, never ``platform:admin``.
    """
    if not wanted:
        return sorted(set(held))
    for scope in wanted:
        if scope in held:
            continue
        if ADMIN_SCOPE in held and scope in TENANT_SCOPES:
            continue
        return None
    return sorted(set(wanted))
