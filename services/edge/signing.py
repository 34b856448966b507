"""RS256 signing keys in ``app.signing_keys``: generate, load, rotate, retire.

The newest activated, unretired key signs; every unretired key verifies, so tokens signed
before a rotation keep working until their key's ``retired_at``. A rotation schedules the
previous keys' retirement after the longest token lifetime by default, so no valid token
is cut short. The key id is the RFC 7638 JWK thumbprint of the public key.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.kit import db

# Serializes key creation across edge replicas starting at once (any constant of our own).
_LOCK_ID = 0x5E11
_SELECT_LIVE = text(
    "SELECT kid, private_pem, activated_at, retired_at FROM app.signing_keys "
    "WHERE retired_at IS NULL OR retired_at > now() ORDER BY activated_at"
)
_INSERT = text(
    "INSERT INTO app.signing_keys (kid, private_pem, public_jwk, activated_at) "
    "VALUES (:kid, :pem, CAST(:jwk AS jsonb), :activated_at)"
)


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def public_jwk(public_key: rsa.RSAPublicKey) -> dict[str, str]:
    """The JWK (RFC 7517) of an RSA public key, with its thumbprint as ``kid``."""
    numbers = public_key.public_numbers()
    members = {"e": _b64url_uint(numbers.e), "kty": "RSA", "n": _b64url_uint(numbers.n)}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()
    return {**members, "use": "sig", "alg": "RS256", "kid": kid}


@dataclass(frozen=True)
class SigningKey:
    """One key pair as the edge uses it."""

    kid: str
    private_key: rsa.RSAPrivateKey
    jwk: dict[str, str]
    activated_at: datetime
    retired_at: datetime | None

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        """The verifying half."""
        return self.private_key.public_key()

    def verifies_at(self, now: datetime) -> bool:
        """Whether tokens signed with this key are accepted at ``now``."""
        return self.retired_at is None or now < self.retired_at

    def signs_at(self, now: datetime) -> bool:
        """Whether this key may sign at ``now``."""
        return self.activated_at <= now and self.verifies_at(now)


def _from_pem(pem: str, activated_at: datetime, retired_at: datetime | None) -> SigningKey:
    private_key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise ValueError("signing keys must be RSA")
    jwk = public_jwk(private_key.public_key())
    return SigningKey(jwk["kid"], private_key, jwk, activated_at, retired_at)


def generate(bits: int = 2048) -> tuple[SigningKey, str]:
    """A new key pair (activated now) and its private key in PKCS#8 PEM."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return _from_pem(pem, datetime.now(UTC), None), pem


class KeyStore:
    """The signing keys table; parsed keys are kept so that a reload costs one query."""

    def __init__(self, engine: AsyncEngine, *, bits: int = 2048) -> None:
        """Use ``engine``'s database; new keys get ``bits``-bit moduli."""
        self._engine = engine
        self._bits = bits
        self._parsed: dict[str, SigningKey] = {}

    async def live(self) -> list[SigningKey]:
        """Keys not yet retired, oldest activation first."""
        async with db.global_transaction(self._engine) as connection:
            rows = (await connection.execute(_SELECT_LIVE)).all()
        keys = []
        for row in rows:
            known = self._parsed.get(row.kid)
            if known is None or known.retired_at != row.retired_at:
                known = _from_pem(row.private_pem, row.activated_at, row.retired_at)
                self._parsed[row.kid] = known
            keys.append(known)
        return keys

    async def _insert(self, connection: AsyncConnection) -> SigningKey:
        key, pem = generate(self._bits)
        await connection.execute(
            _INSERT,
            {
                "kid": key.kid,
                "pem": pem,
                "jwk": json.dumps(key.jwk),
                "activated_at": key.activated_at,
            },
        )
        return key

    async def ensure_signer(self) -> None:
        """Create a key when none can sign (first start, or every key retired)."""
        async with db.global_transaction(self._engine) as connection:
            await connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
            now = datetime.now(UTC)
            found = (
                await connection.execute(
                    text(
                        "SELECT 1 FROM app.signing_keys WHERE activated_at <= :now "
                        "AND (retired_at IS NULL OR retired_at > :now) LIMIT 1"
                    ),
                    {"now": now},
                )
            ).first()
            if found is None:
                await self._insert(connection)

    async def rotate(self, retire_previous_after: timedelta | None) -> str:
        """Make a new key the signer; older keys retire after the delay (None: never)."""
        async with db.global_transaction(self._engine) as connection:
            await connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
            key = await self._insert(connection)
            if retire_previous_after is not None:
                await connection.execute(
                    text(
                        "UPDATE app.signing_keys SET retired_at = :at "
                        "WHERE kid <> :kid AND (retired_at IS NULL OR retired_at > :at)"
                    ),
                    {"kid": key.kid, "at": key.activated_at + retire_previous_after},
                )
        return key.kid

    async def retire(self, kid: str, at: datetime | None = None) -> bool:
        """Stop accepting tokens signed by ``kid`` from ``at`` (default: now)."""
        async with db.global_transaction(self._engine) as connection:
            result = await connection.execute(
                text("UPDATE app.signing_keys SET retired_at = :at WHERE kid = :kid"),
                {"kid": kid, "at": at or datetime.now(UTC)},
            )
        return bool(result.rowcount)
