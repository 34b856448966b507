"""AuthService servicer: proto in, issuance / key ring / authentication, proto out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from services.edge.authn import Authenticator, CredentialKind, detect
from services.edge.issuance import Issuer
from services.edge.tokens import KeyRing
from services.kit import errors
from supportmesh.control.v1 import resources_pb2 as res
from supportmesh.edge.v1 import auth_service_pb2 as pb
from supportmesh.edge.v1 import auth_service_pb2_grpc as pb_grpc

_KINDS = {
    pb.CREDENTIAL_TYPE_JWT: CredentialKind.JWT,
    pb.CREDENTIAL_TYPE_API_KEY: CredentialKind.API_KEY,
}
_TYPES = {kind: credential_type for credential_type, kind in _KINDS.items()}


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _role(name: str) -> res.UserRole.ValueType:
    try:
        return res.UserRole.Value(f"USER_ROLE_{name}")
    except ValueError:
        return res.USER_ROLE_UNSPECIFIED


class AuthServicer(pb_grpc.AuthServiceServicer):
    """Thin adapter between the AuthService contract and the edge's logic modules."""

    def __init__(
        self, issuer: Issuer, ring: KeyRing, authenticator: Authenticator, *, audience: str
    ) -> None:
        """Issue with ``issuer``, publish ``ring``, introspect with ``authenticator``."""
        self._issuer = issuer
        self._ring = ring
        self._authenticator = authenticator
        self._audience = audience

    async def IssueToken(  # noqa: N802 - gRPC method name
        self, request: pb.IssueTokenRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.IssueTokenResponse:
        """Exchange an API key for a JWT."""
        ttl = request.ttl.ToTimedelta() if request.HasField("ttl") else None
        issued = await self._issuer.issue(
            request.api_key, list(request.scopes), request.audience, ttl
        )
        return pb.IssueTokenResponse(
            access_token=issued.token,
            token_type="Bearer",  # noqa: S106 - the OAuth token type, not a secret
            expire_time=_timestamp(issued.expires_at),
            scopes=issued.scopes,
            signing_key_id=issued.kid,
            tenant=f"tenants/{issued.tenant_id}",
        )

    async def GetJwks(  # noqa: N802 - gRPC method name
        self, request: pb.GetJwksRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetJwksResponse:
        """Publish the keys that verify tokens now, the previous one during a rotation too."""
        await self._ring.ready()
        keys = [
            pb.JsonWebKey(
                kty="RSA", use="sig", alg="RS256", kid=key.kid, n=key.jwk["n"], e=key.jwk["e"]
            )
            for key in self._ring.verifying(datetime.now(UTC))
        ]
        return pb.GetJwksResponse(keys=keys)

    async def Introspect(  # noqa: N802 - gRPC method name
        self, request: pb.IntrospectRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.IntrospectResponse:
        """Say whose a credential is; UNAUTHENTICATED with a reason when it is not valid."""
        if not request.credential:
            raise errors.InvalidArgument("credential is required", field="credential")
        kind = _KINDS.get(request.credential_type) or detect(request.credential)
        principal = await self._authenticator.authenticate(
            request.credential, kind, request.audience or self._audience
        )
        response = pb.IntrospectResponse(
            tenant_id=principal.tenant_id,
            subject=principal.subject,
            credential_type=_TYPES[principal.kind],
            roles=[_role(role) for role in principal.roles],
            scopes=principal.scopes,
            key_id=principal.key_id,
        )
        if principal.expires_at is not None:
            response.expire_time.CopyFrom(_timestamp(principal.expires_at))
        return response
