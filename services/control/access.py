"""Who may do what: tenant callers act inside their own tenant, the operator anywhere.

Mutations need the ``admin`` scope, reads ``admin`` or ``control:read``; platform-wide
changes need the platform operator. A name in another tenant answers NOT_FOUND so that
other tenants' ids are never disclosed.
"""

from __future__ import annotations

from services.control import names, scopes
from services.kit import errors, tenancy
from supportmesh.common.v1 import errors_pb2


def _identified() -> None:
    call = tenancy.caller()
    if not call.platform_admin and not call.tenant_id:
        raise errors.Unauthenticated(
            "this call needs a tenant set by the edge",
            reason=errors_pb2.ERROR_REASON_TENANT_CONTEXT_MISSING,
        )


def _scope(write: bool) -> None:
    tenancy.require_scope(tenancy.ADMIN_SCOPE if write else scopes.CONTROL_READ)


def tenant(name: str, *, write: bool, field: str = "name") -> str:
    """The tenant of ``tenants/{tenant}``, which the caller may read or change."""
    tenant_id = names.parse_tenant(name, field)
    tenancy.authorize_name(name, field)
    _scope(write)
    return tenant_id


def child(name: str, collection: str, *, write: bool, field: str = "name") -> tuple[str, str]:
    """``(tenant, id)`` of a tenant's child resource the caller may read or change."""
    tenant_id, child_id = names.parse_child(name, collection, field)
    tenancy.authorize_name(name, field)
    _scope(write)
    return tenant_id, child_id


def platform_read() -> None:
    """Reading a platform-wide resource (plans, policy versions, platform switches)."""
    _identified()
    _scope(write=False)


def platform_write() -> None:
    """Changing a platform-wide resource: the platform operator only."""
    _identified()
    tenancy.require_platform_admin()


def is_platform_admin() -> bool:
    """Whether the platform operator makes this call."""
    return tenancy.caller().platform_admin


def own_tenant() -> str:
    """The caller's own tenant (UNAUTHENTICATED without one)."""
    return tenancy.require_tenant()
