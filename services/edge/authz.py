"""The edge's decision for one request: authenticate, check the method's scope, apply limits.

Transport-free: Envoy's Check servicer hands in the gRPC method path and the request
headers and gets back either the principal to vouch for or a :class:`DomainError` to
answer with. The order matters: an unknown caller learns nothing about scopes or limits
(401 first), and a refused scope costs no rate-limit token (403 before 429). A client that
names its tenant (``x-tenant-id``) must name the credential's (403 TENANT_MISMATCH).
"""

from __future__ import annotations

from collections.abc import Mapping

from services.edge import scopes
from services.edge.authn import Authenticator, CredentialKind, Principal, presented
from services.edge.limits import Budget, Limiter
from services.kit import context, errors
from supportmesh.common.v1 import errors_pb2

ANONYMOUS = Principal(
    tenant_id="", subject="", scopes=(), roles=(), key_id="", kind=CredentialKind.API_KEY
)


class Gate:
    """Admits or refuses requests on their way to an upstream service."""

    def __init__(self, authenticator: Authenticator, limiter: Limiter, *, audience: str) -> None:
        """Verify credentials with ``authenticator``; tokens must be meant for ``audience``."""
        self._authenticator = authenticator
        self._limiter = limiter
        self._audience = audience

    async def check(self, path: str, headers: Mapping[str, str]) -> Principal:
        """The principal allowed to make this call; a DomainError when it is refused."""
        method = path.partition("?")[0]
        required = scopes.required_scope(method)
        if required == scopes.PUBLIC:
            return ANONYMOUS
        credential, kind = presented(headers)
        principal = await self._authenticator.authenticate(credential, kind, self._audience)
        claimed = headers.get(context.CLIENT_TENANT_KEY, "")
        if claimed and not principal.platform_admin and claimed != principal.tenant_id:
            raise errors.PermissionDenied(
                f"the {context.CLIENT_TENANT_KEY} header names a tenant other than the "
                "credential's",
                reason=errors_pb2.ERROR_REASON_TENANT_MISMATCH,
                metadata={"header": context.CLIENT_TENANT_KEY},
            )
        if required is None or not scopes.grants(
            principal.scopes, required, platform_admin=principal.platform_admin
        ):
            needed = required if required not in (None, scopes.INTERNAL) else ""
            raise errors.PermissionDenied(
                f"the credential does not allow {method}"
                + (f"; it needs the {needed!r} scope" if needed else ""),
                reason=errors_pb2.ERROR_REASON_SCOPE_MISSING,
                metadata={"scope": needed, "method": method},
            )
        if not principal.platform_admin:
            await self._limiter.admit(
                Budget(
                    tenant_id=principal.tenant_id,
                    key_id=principal.key_id,
                    tenant_rpm=principal.limits.requests_per_minute,
                    key_rpm=principal.requests_per_minute,
                    quotas=principal.limits.quota,
                )
            )
        return principal


def gate_unavailable() -> errors.Unavailable:
    """The refusal when the gate itself failed (PostgreSQL or Valkey unreachable): fail closed."""
    return errors.Unavailable(
        "the edge cannot check credentials right now",
        reason=errors_pb2.ERROR_REASON_DEPENDENCY_UNAVAILABLE,
        retry_after_s=1.0,
    )


def trusted_headers(principal: Principal) -> dict[str, str]:
    """The trusted metadata to set for upstreams (the edge strips clients' copies first)."""
    values = {
        context.TENANT_KEY: principal.tenant_id,
        context.SUBJECT_KEY: principal.subject,
        context.SCOPES_KEY: " ".join(principal.scopes),
        context.PLATFORM_ADMIN_KEY: "1" if principal.platform_admin else "",
        context.MAX_CONNECTIONS_KEY: str(principal.limits.max_connections or ""),
    }
    return {key: value for key, value in values.items() if value}
