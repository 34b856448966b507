"""IssueToken's rules: an API key in, a JWT out that can do no more than the key, for ≤ 1 h."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.edge import scopes, tokens
from services.edge.authn import Authenticator
from services.edge.tokens import KeyRing
from services.kit import errors
from supportmesh.common.v1 import errors_pb2

_MAX_AUDIENCE = 256


@dataclass(frozen=True)
class IssuedToken:
    """A freshly signed token and what it grants."""

    token: str
    expires_at: datetime
    scopes: list[str]
    kid: str
    tenant_id: str


class Issuer:
    """Exchanges API keys for tokens."""

    def __init__(
        self,
        authenticator: Authenticator,
        ring: KeyRing,
        *,
        issuer: str,
        audience: str,
        max_ttl: timedelta,
    ) -> None:
        """Sign as ``issuer``; ``audience`` is the default; tokens live at most ``max_ttl``."""
        self._authenticator = authenticator
        self._ring = ring
        self._issuer = issuer
        self._audience = audience
        self._max_ttl = max_ttl

    def _ttl(self, requested: timedelta | None) -> timedelta:
        if requested is None or requested == timedelta(0):
            return self._max_ttl
        if requested < timedelta(0):
            raise errors.InvalidArgument("ttl must not be negative", field="ttl")
        return min(requested, self._max_ttl)

    async def issue(
        self, api_key: str, wanted: list[str], audience: str, ttl: timedelta | None
    ) -> IssuedToken:
        """Sign a token for the key behind ``api_key``, narrowed to ``wanted`` scopes."""
        if not api_key:
            raise errors.Unauthenticated(
                "api_key is required", reason=errors_pb2.ERROR_REASON_CREDENTIALS_MISSING
            )
        lifetime = self._ttl(ttl)
        audience = audience or self._audience
        if len(audience) > _MAX_AUDIENCE:
            raise errors.InvalidArgument("audience is too long", field="audience")
        record = await self._authenticator.key_record(api_key)
        if record is None:
            # The operator key stays a key: a token minted from it could not be revoked by
            # rotating the key's hash.
            raise errors.InvalidArgument(
                "the platform operator key cannot be exchanged for a token", field="api_key"
            )
        granted = scopes.narrow(record.scopes, wanted)
        if granted is None:
            raise errors.PermissionDenied(
                "a token can only narrow the key's scopes",
                reason=errors_pb2.ERROR_REASON_SCOPE_MISSING,
                field="scopes",
            )
        await self._ring.ready()
        key = self._ring.signer(datetime.now(UTC))
        # JWT times are whole seconds; truncating keeps expire_time equal to the exp claim.
        now = datetime.now(UTC).replace(microsecond=0)
        expires_at = now + lifetime
        if record.expires_at is not None:
            expires_at = min(expires_at, record.expires_at.replace(microsecond=0))
        token = tokens.issue(
            key,
            issuer=self._issuer,
            audience=audience,
            tenant_id=record.tenant_id,
            subject=record.subject,
            scopes=granted,
            roles=[record.role] if record.role else [],
            key_id=record.key_id,
            expires_at=expires_at,
            now=now,
        )
        return IssuedToken(token, expires_at, granted, key.kid, record.tenant_id)
