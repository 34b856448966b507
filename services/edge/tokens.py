"""RS256 JWTs: issued from an API key, verified against the cached key ring.

Verification never touches the database on the hot path: the ring holds the unretired keys,
reloads them every ``refresh_s`` in the background and at once when a token names a kid it
does not know (at most once per ``unknown_kid_interval_s``, so forged kids cannot make the
edge hammer PostgreSQL). A key's scheduled ``retired_at`` is honoured to the second even
between reloads, because the ring checks it at verification time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from sqlalchemy.exc import SQLAlchemyError

from services.edge.signing import KeyStore, SigningKey
from services.kit import errors
from supportmesh.common.v1 import errors_pb2

_log = logging.getLogger("supportmesh.edge.tokens")
ALGORITHM = "RS256"
_REQUIRED = ["iss", "aud", "sub", "iat", "exp", "tenant", "scopes", "key_id"]
# Tolerated clock difference between the replica that signed and the one that verifies.
LEEWAY_S = 5
# Verified tokens remembered at most; past it the memory starts over (bounds a token flood).
_MAX_REMEMBERED = 20_000


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token says."""

    tenant_id: str
    subject: str
    scopes: tuple[str, ...]
    roles: tuple[str, ...]
    key_id: str
    expires_at: datetime


class KeyRing:
    """The live signing keys in memory, kept fresh from :class:`KeyStore`."""

    def __init__(self, store: KeyStore, *, refresh_s: float, unknown_kid_interval_s: float) -> None:
        """Reload from ``store`` every ``refresh_s``; on unknown kids at most as often as given."""
        self._store = store
        self._refresh_s = refresh_s
        self._unknown_kid_interval_s = unknown_kid_interval_s
        self._keys: dict[str, SigningKey] = {}
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()
        self._start_lock = asyncio.Lock()
        self._started = False
        self._task: asyncio.Task[None] | None = None

    async def ready(self) -> None:
        """Start the ring on first use: a key that can sign, loaded keys, background reloads."""
        if self._started:
            return
        async with self._start_lock:
            if self._started:
                return
            await self._store.ensure_signer()
            await self.reload()
            self._task = asyncio.create_task(self._keep_fresh(), name="edge-keyring")
            self._started = True

    async def close(self) -> None:
        """Stop the background reloads."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def reload(self) -> None:
        """Load the unretired keys now."""
        async with self._lock:
            keys = await self._store.live()
            self._keys = {key.kid: key for key in keys}
            self._loaded_at = time.monotonic()

    async def _keep_fresh(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                if not any(key.signs_at(datetime.now(UTC)) for key in self._keys.values()):
                    await self._store.ensure_signer()
                await self.reload()
            except (SQLAlchemyError, OSError):  # a database hiccup must not end the loop
                _log.exception("reloading signing keys failed")

    def signer(self, now: datetime) -> SigningKey:
        """The key to sign with: the newest one activated and not retired."""
        usable = [key for key in self._keys.values() if key.signs_at(now)]
        if not usable:
            raise errors.Unavailable("no signing key is active")
        return max(usable, key=lambda key: key.activated_at)

    def verifying(self, now: datetime) -> list[SigningKey]:
        """Keys whose tokens are accepted at ``now`` (what GetJwks publishes)."""
        return [key for key in self._keys.values() if key.verifies_at(now)]

    async def find(self, kid: str, now: datetime) -> SigningKey | None:
        """The key ``kid`` if it verifies at ``now``; reloads once when it is unknown."""
        key = self._keys.get(kid)
        if key is None and time.monotonic() - self._loaded_at >= self._unknown_kid_interval_s:
            await self.reload()
            key = self._keys.get(kid)
        return key if key is not None and key.verifies_at(now) else None


def issue(
    key: SigningKey,
    *,
    issuer: str,
    audience: str,
    tenant_id: str,
    subject: str,
    scopes: list[str],
    roles: list[str],
    key_id: str,
    expires_at: datetime,
    now: datetime,
) -> str:
    """Sign a token with ``key``."""
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "tenant": tenant_id,
        "roles": roles,
        "scopes": scopes,
        "key_id": key_id,
        "iat": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
        "jti": secrets.token_urlsafe(12),
    }
    return jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})


def _invalid(message: str) -> errors.Unauthenticated:
    return errors.Unauthenticated(message, reason=errors_pb2.ERROR_REASON_CREDENTIALS_INVALID)


def _expired() -> errors.Unauthenticated:
    return errors.Unauthenticated(
        "the bearer token has expired", reason=errors_pb2.ERROR_REASON_CREDENTIALS_EXPIRED
    )


class TokenVerifier:
    """Checks signature, key, issuer, audience, expiry and lifetime of presented tokens.

    A token that verified once is remembered until it expires (a client sends the same token
    for up to an hour): later requests skip the RSA and JSON work, yet still see the
    expiry, and a retired signing key, at the moment they happen.
    """

    def __init__(self, ring: KeyRing, *, issuer: str, max_lifetime: timedelta) -> None:
        """Accept tokens of ``issuer`` living at most ``max_lifetime``."""
        self._ring = ring
        self._issuer = issuer
        self._max_lifetime_s = max_lifetime.total_seconds()
        self._verified: dict[tuple[str, str], tuple[TokenClaims, str]] = {}

    async def verify(self, token: str, audience: str) -> TokenClaims:
        """The claims of a valid token for ``audience``; UNAUTHENTICATED with a reason if not."""
        remembered = self._verified.get((token, audience))
        if remembered is not None:
            claims, kid = remembered
            now = datetime.now(UTC)
            if now.timestamp() >= claims.expires_at.timestamp() + LEEWAY_S:
                del self._verified[(token, audience)]
                raise _expired()
            if await self._ring.find(kid, now) is None:
                del self._verified[(token, audience)]
                raise _invalid("the bearer token's signing key is unknown or retired")
            return claims
        claims, kid = await self._verify(token, audience)
        if len(self._verified) >= _MAX_REMEMBERED:
            self._verified.clear()
        self._verified[(token, audience)] = claims, kid
        return claims

    async def _verify(self, token: str, audience: str) -> tuple[TokenClaims, str]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise _invalid("the bearer token is malformed") from None
        kid = header.get("kid")
        if header.get("alg") != ALGORITHM or not isinstance(kid, str):
            raise _invalid("the bearer token must be RS256 with a kid")
        await self._ring.ready()
        key = await self._ring.find(kid, datetime.now(UTC))
        if key is None:
            raise _invalid("the bearer token's signing key is unknown or retired")
        try:
            claims = jwt.decode(
                token,
                key.public_key,
                algorithms=[ALGORITHM],
                audience=audience,
                issuer=self._issuer,
                leeway=LEEWAY_S,
                options={"require": _REQUIRED},
            )
        except jwt.ExpiredSignatureError:
            raise _expired() from None
        except jwt.InvalidAudienceError:
            raise errors.Unauthenticated(
                "the bearer token was issued for another audience",
                reason=errors_pb2.ERROR_REASON_AUDIENCE_MISMATCH,
            ) from None
        except jwt.InvalidTokenError:
            raise _invalid("the bearer token is invalid") from None
        return self._claims(claims), kid

    def _claims(self, claims: dict[str, Any]) -> TokenClaims:
        iat, exp = claims["iat"], claims["exp"]
        if not isinstance(iat, int) or not isinstance(exp, int):
            raise _invalid("the bearer token's times are malformed")
        if exp - iat > self._max_lifetime_s:
            raise _invalid("the bearer token lives longer than tokens may")
        tenant, subject, key_id = claims["tenant"], claims["sub"], claims["key_id"]
        scopes, roles = claims["scopes"], claims.get("roles", [])
        if not all(isinstance(value, str) and value for value in (tenant, subject, key_id)):
            raise _invalid("the bearer token's identity claims are malformed")
        if not _strings(scopes) or not _strings(roles):
            raise _invalid("the bearer token's scopes or roles are malformed")
        return TokenClaims(
            tenant_id=tenant,
            subject=subject,
            scopes=tuple(scopes),
            roles=tuple(roles),
            key_id=key_id,
            expires_at=datetime.fromtimestamp(exp, UTC),
        )


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)
