"""API key format, hashing and verification shared by the control plane and the edge.

A key reads ``smk_<key_id>_<secret>``: the key id locates the record, the secret (32 random
bytes, URL-safe base64) is only ever stored as its SHA-256. A fast hash is right here: the
secret has 256 bits of entropy, so there is nothing for a slow hash to protect.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

PREFIX = "smk"
# The platform operator's key has this reserved id; its hash comes from settings, not the DB.
PLATFORM_KEY_ID = "0" * 16
_FORMAT = re.compile(r"^smk_([a-z0-9]{16})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class NewKey:
    """A freshly minted key: the full secret string is shown once and never stored."""

    key_id: str
    secret: str
    secret_hash: bytes
    display_prefix: str


def mint() -> NewKey:
    """Create a new key id and secret."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    full = f"{PREFIX}_{key_id}_{secret}"
    return NewKey(key_id, full, hash_secret(secret), full[:12])


def mint_platform() -> NewKey:
    """Create the platform operator's key (reserved id, random secret)."""
    secret = secrets.token_urlsafe(32)
    full = f"{PREFIX}_{PLATFORM_KEY_ID}_{secret}"
    return NewKey(PLATFORM_KEY_ID, full, hash_secret(secret), full[:12])


def hash_secret(secret: str) -> bytes:
    """The stored form of a key's secret part."""
    return hashlib.sha256(secret.encode()).digest()


def parse(presented: str) -> tuple[str, str] | None:
    """Split a presented key into (key_id, secret), or None when it is not a key at all."""
    match = _FORMAT.match(presented)
    return (match.group(1), match.group(2)) if match else None


def verify(secret: str, stored_hash: bytes) -> bool:
    """Compare a presented secret with the stored hash in constant time."""
    return hmac.compare_digest(hash_secret(secret), stored_hash)
