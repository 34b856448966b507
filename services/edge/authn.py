"""Who is calling: a presented JWT or API key turned into a verified :class:`Principal`.

Credentials arrive as ``authorization: Bearer <jwt>``, ``authorization: Bearer smk_…`` or
``x-api-key: smk_…``. A token is only as good as the key it was issued from: its key is
looked up too (through the same ≤ ``ttl_s`` cache), so revoking a key or suspending its
tenant also stops the tokens already issued from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum

from services.edge.credentials import KeyDirectory, KeyRecord, PlanLimits
from services.edge.tokens import TokenVerifier
from services.kit import apikeys, errors
from services.kit.tenancy import PLATFORM_ADMIN_SCOPE
from supportmesh.common.v1 import errors_pb2

PLATFORM_SUBJECT = "platform-admin"


class CredentialKind(Enum):
    """What kind of credential was presented."""

    JWT = "jwt"
    API_KEY = "api_key"


@dataclass(frozen=True)
class Principal:
    """A verified caller."""

    tenant_id: str
    subject: str
    scopes: tuple[str, ...]
    roles: tuple[str, ...]
    key_id: str
    kind: CredentialKind
    platform_admin: bool = False
    expires_at: datetime | None = None
    requests_per_minute: int = 0
    limits: PlanLimits = field(default_factory=PlanLimits)


def _unauthenticated(
    message: str, reason: errors_pb2.ErrorReason.ValueType
) -> errors.Unauthenticated:
    return errors.Unauthenticated(message, reason=reason)


def _invalid(message: str) -> errors.Unauthenticated:
    return _unauthenticated(message, errors_pb2.ERROR_REASON_CREDENTIALS_INVALID)


def presented(headers: Mapping[str, str]) -> tuple[str, CredentialKind]:
    """The one credential in request headers and its kind; UNAUTHENTICATED when there is none."""
    authorization = headers.get("authorization", "")
    api_key = headers.get("x-api-key", "")
    if authorization and api_key:
        raise _invalid("send one credential: authorization or x-api-key, not both")
    if api_key:
        return api_key.strip(), CredentialKind.API_KEY
    if not authorization:
        raise _unauthenticated(
            "this call needs a credential: authorization: Bearer <token> or x-api-key",
            errors_pb2.ERROR_REASON_CREDENTIALS_MISSING,
        )
    scheme, _, credential = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise _invalid("the authorization header must use the Bearer scheme")
    credential = credential.strip()
    if not credential:
        raise _unauthenticated(
            "the bearer credential is empty", errors_pb2.ERROR_REASON_CREDENTIALS_MISSING
        )
    return credential, detect(credential)


def detect(credential: str) -> CredentialKind:
    """Tell an API key from a token by its shape."""
    return (
        CredentialKind.API_KEY
        if credential.startswith(apikeys.PREFIX + "_")
        else CredentialKind.JWT
    )


def _check_key(record: KeyRecord, now: datetime) -> None:
    if record.revoked_at is not None and record.revoked_at <= now:
        raise _unauthenticated(
            "the API key was revoked", errors_pb2.ERROR_REASON_CREDENTIALS_REVOKED
        )
    if record.expires_at is not None and record.expires_at <= now:
        raise _unauthenticated(
            "the API key has expired", errors_pb2.ERROR_REASON_CREDENTIALS_EXPIRED
        )
    if not record.tenant_active:
        raise errors.PermissionDenied(
            "the tenant is suspended", reason=errors_pb2.ERROR_REASON_INVALID_STATE
        )


class Authenticator:
    """Verifies API keys (against the directory) and tokens (against the key ring)."""

    def __init__(
        self,
        directory: KeyDirectory,
        verifier: TokenVerifier,
        *,
        platform_key_sha256: bytes | None,
    ) -> None:
        """``platform_key_sha256`` is the operator key's secret hash (None: no operator key)."""
        self._directory = directory
        self._verifier = verifier
        self._platform_hash = platform_key_sha256

    async def authenticate(self, credential: str, kind: CredentialKind, audience: str) -> Principal:
        """The principal behind ``credential``; tokens must be meant for ``audience``."""
        if kind is CredentialKind.API_KEY:
            return await self.api_key(credential)
        return await self.token(credential, audience)

    async def key_record(self, presented_key: str) -> KeyRecord | None:
        """The verified record of an API key (None for the operator key); refuses bad keys."""
        parsed = apikeys.parse(presented_key)
        if parsed is None:
            raise _invalid("the API key is malformed")
        key_id, secret = parsed
        if key_id == apikeys.PLATFORM_KEY_ID:
            if self._platform_hash is None or not apikeys.verify(secret, self._platform_hash):
                raise _invalid("the API key is not valid")
            return None
        record = await self._directory.get(key_id)
        # Hash even for unknown ids so both refusals take the same time.
        stored = record.secret_hash if record is not None else b"\0" * 32
        if not apikeys.verify(secret, stored) or record is None:
            raise _invalid("the API key is not valid")
        _check_key(record, datetime.now(UTC))
        return record

    async def api_key(self, presented_key: str) -> Principal:
        """The principal of an API key."""
        record = await self.key_record(presented_key)
        if record is None:
            return Principal(
                tenant_id="",
                subject=PLATFORM_SUBJECT,
                scopes=(PLATFORM_ADMIN_SCOPE,),
                roles=(),
                key_id=apikeys.PLATFORM_KEY_ID,
                kind=CredentialKind.API_KEY,
                platform_admin=True,
            )
        return Principal(
            tenant_id=record.tenant_id,
            subject=record.subject,
            scopes=record.scopes,
            roles=(record.role,) if record.role else (),
            key_id=record.key_id,
            kind=CredentialKind.API_KEY,
            expires_at=record.expires_at,
            requests_per_minute=record.requests_per_minute,
            limits=record.limits,
        )

    async def token(self, token: str, audience: str) -> Principal:
        """The principal of a JWT, provided the key it came from is still good."""
        claims = await self._verifier.verify(token, audience)
        record = await self._directory.get(claims.key_id)
        if record is None or record.tenant_id != claims.tenant_id:
            raise _invalid("the bearer token's API key no longer exists")
        _check_key(record, datetime.now(UTC))
        return Principal(
            tenant_id=claims.tenant_id,
            subject=claims.subject,
            scopes=claims.scopes,
            roles=claims.roles,
            key_id=claims.key_id,
            kind=CredentialKind.JWT,
            expires_at=claims.expires_at,
            requests_per_minute=record.requests_per_minute,
            limits=record.limits,
        )
