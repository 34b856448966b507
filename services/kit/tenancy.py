"""Who the caller is, as the edge vouched for it: tenant, scopes and resource-name checks.

Services never trust a tenant named in a request body or path on its own: the tenant comes
from the trusted metadata the edge sets after verifying the credential, and anything the
request names must agree with it (OWASP API1, broken object level authorization).
"""

from __future__ import annotations

import re

from services.kit import context, errors
from supportmesh.common.v1 import errors_pb2

_TENANT_NAME = re.compile(r"^tenants/([a-z][a-z0-9-]{2,62})(?:/|$)")
PLATFORM_ADMIN_SCOPE = "platform:admin"
ADMIN_SCOPE = "admin"


def caller() -> context.CallContext:
    """The current call's context; refuses calls that arrive without one."""
    call = context.current()
    if call is None:
        raise errors.Unauthenticated(
            "no call context", reason=errors_pb2.ERROR_REASON_TENANT_CONTEXT_MISSING
        )
    return call


def require_tenant() -> str:
    """The caller's tenant; UNAUTHENTICATED when the edge's trusted metadata is missing."""
    call = caller()
    if not call.tenant_id:
        raise errors.Unauthenticated(
            "this call needs a tenant set by the edge",
            reason=errors_pb2.ERROR_REASON_TENANT_CONTEXT_MISSING,
        )
    return call.tenant_id


def check_claimed_tenant(claimed: str, field: str = "tenant_id") -> str:
    """The caller's tenant, after checking that a tenant named in the request agrees."""
    tenant = require_tenant()
    if claimed and claimed != tenant:
        raise errors.PermissionDenied(
            "the request names a tenant other than the caller's",
            reason=errors_pb2.ERROR_REASON_TENANT_MISMATCH,
            field=field,
        )
    return tenant


def tenant_of(name: str, field: str = "name") -> str:
    """The tenant id in a resource name such as ``tenants/acme/runs/42``."""
    match = _TENANT_NAME.match(name)
    if match is None:
        raise errors.InvalidArgument(f"{field} must start with tenants/{{tenant}}", field=field)
    return match.group(1)


def authorize_name(name: str, field: str = "name") -> str:
    """The tenant of a resource name, which must be the caller's (or a platform admin's)."""
    tenant = tenant_of(name, field)
    call = caller()
    if call.platform_admin:
        return tenant
    if not call.tenant_id:
        raise errors.Unauthenticated(
            "this call needs a tenant set by the edge",
            reason=errors_pb2.ERROR_REASON_TENANT_CONTEXT_MISSING,
        )
    if tenant != call.tenant_id:
        # NOT_FOUND rather than PERMISSION_DENIED: another tenant's ids are not disclosed.
        raise errors.NotFound(f"{name} not found", field=field)
    return tenant


def require_scope(scope: str) -> None:
    """Refuse the call unless the caller holds ``scope`` (admins and platform admins do)."""
    call = caller()
    if call.platform_admin or scope in call.scopes or ADMIN_SCOPE in call.scopes:
        return
    raise errors.PermissionDenied(
        f"this call needs the {scope!r} scope",
        reason=errors_pb2.ERROR_REASON_SCOPE_MISSING,
        metadata={"scope": scope},
    )


def require_platform_admin() -> None:
    """Refuse the call unless the platform operator makes it."""
    if not caller().platform_admin:
        raise errors.PermissionDenied(
            "only the platform operator may do this",
            reason=errors_pb2.ERROR_REASON_SCOPE_MISSING,
            metadata={"scope": PLATFORM_ADMIN_SCOPE},
        )
