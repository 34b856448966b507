"""Signing keys: JWKs with RFC 7638 thumbprints as key ids, and the retirement rules."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from services.edge import signing, tokens


def test_generated_key_publishes_a_jwk_with_its_thumbprint() -> None:
    key, pem = signing.generate()
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")
    assert key.jwk["kid"] == key.kid
    assert (key.jwk["kty"], key.jwk["alg"], key.jwk["use"], key.jwk["e"]) == (
        "RSA", "RS256", "sig", "AQAB"
    )  # fmt: skip
    assert signing.public_jwk(key.public_key) == key.jwk


def test_rfc7638_thumbprint_example() -> None:
    # The example key of RFC 7638 section 3.1 and its thumbprint.
    n = int.from_bytes(
        jwt.utils.base64url_decode(
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
            "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY"
            "368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0f"
            "M4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
        ),
        "big",
    )
    public = rsa.RSAPublicNumbers(65537, n).public_key()
    assert signing.public_jwk(public)["kid"] == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_retirement_window() -> None:
    key, _ = signing.generate()
    now = datetime.now(UTC)
    assert key.signs_at(now + timedelta(seconds=1))
    assert not key.signs_at(key.activated_at - timedelta(seconds=1))
    retiring = replace(key, retired_at=now + timedelta(minutes=5))
    assert retiring.verifies_at(now)
    assert not retiring.verifies_at(now + timedelta(minutes=5))


def test_issued_token_has_the_kid_and_claims() -> None:
    key, _ = signing.generate()
    now = datetime.now(UTC).replace(microsecond=0)
    token = tokens.issue(
        key,
        issuer="iss",
        audience="aud",
        tenant_id="acme",
        subject="tenants/acme/apiKeys/k",
        scopes=["router:decide"],
        roles=[],
        key_id="k",
        expires_at=now + timedelta(hours=1),
        now=now,
    )
    assert jwt.get_unverified_header(token)["kid"] == key.kid
    claims = jwt.decode(token, key.public_key, algorithms=["RS256"], audience="aud")
    assert (claims["tenant"], claims["key_id"], claims["exp"] - claims["iat"]) == (
        "acme",
        "k",
        3600,
    )
