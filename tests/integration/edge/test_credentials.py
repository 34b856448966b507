"""The bad-credential matrix: every way a credential can be wrong, over REST and native gRPC,
each answered with the right status and ErrorInfo reason."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.edge import signing, tokens
from services.edge.app import EdgeSettings
from services.kit import db
from services.kit.devstack import Platform
from tests.integration.edge import provision
from tests.integration.edge.conftest import TRANSPORTS, Edge, Outcome, api_key, bearer

pytestmark = pytest.mark.parametrize("transport", TRANSPORTS)
DEFAULTS = EdgeSettings.model_fields


def unauthenticated(outcome: Outcome, reason: str) -> None:
    assert (outcome.http, outcome.code, outcome.reason) == (401, 16, reason), outcome


@pytest.fixture(scope="module")
async def owner_engine(platform: Platform) -> AsyncIterator[AsyncEngine]:
    engine = db.create_engine(platform.admin_database_url, pool_size=1)
    try:
        yield engine
    finally:
        await engine.dispose()


async def forge(
    engine: AsyncEngine,
    key: provision.Key,
    *,
    expires_at: datetime,
    signer: signing.SigningKey | None = None,
) -> str:
    """A token with chosen claims, signed by the edge's current key unless ``signer`` is given."""
    if signer is None:
        live = await signing.KeyStore(engine).live()
        now = datetime.now(UTC)
        signer = max((k for k in live if k.signs_at(now)), key=lambda k: k.activated_at)
    return tokens.issue(
        signer,
        issuer=DEFAULTS["issuer"].default,
        audience=DEFAULTS["audience"].default,
        tenant_id=key.tenant,
        subject=key.name,
        scopes=["router:decide"],
        roles=[],
        key_id=key.key_id,
        expires_at=expires_at,
        now=expires_at - timedelta(minutes=30),
    )


async def test_valid_key_and_token_pass(
    edge: Edge, platform: Platform, key: provision.Key, transport: str
) -> None:
    token = (await provision.issue_token(platform, key)).access_token
    for headers in (api_key(key), bearer(key.secret), bearer(token)):
        outcome = await edge.decide(transport, headers, tenant_id=key.tenant)
        assert outcome.http == 200, (headers, outcome)


async def test_missing_credential(edge: Edge, transport: str) -> None:
    unauthenticated(await edge.decide(transport, {}), "CREDENTIALS_MISSING")
    unauthenticated(
        await edge.decide(transport, {"authorization": "Bearer"}), "CREDENTIALS_MISSING"
    )


@pytest.mark.parametrize(
    "headers",
    [
        bearer("not-a-jwt"),
        bearer("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."),  # alg "none"
        {"x-api-key": "smk_short"},
        {"authorization": "Basic dXNlcjpwYXNz"},
        bearer("smk_" + "a" * 16 + "_" + "b" * 43),  # well-formed, no such key
    ],
    ids=["garbage-jwt", "alg-none", "short-key", "basic-scheme", "unknown-key"],
)
async def test_malformed_or_unknown_credential(
    edge: Edge, transport: str, headers: dict[str, str]
) -> None:
    unauthenticated(await edge.decide(transport, headers), "CREDENTIALS_INVALID")


async def test_wrong_secret_for_a_real_key_id(
    edge: Edge, key: provision.Key, transport: str
) -> None:
    forged = key.secret[: -len("x" * 43)] + "A" * 43
    unauthenticated(await edge.decide(transport, {"x-api-key": forged}), "CREDENTIALS_INVALID")


async def test_expired_token(
    edge: Edge, owner_engine: AsyncEngine, key: provision.Key, transport: str
) -> None:
    token = await forge(owner_engine, key, expires_at=datetime.now(UTC) - timedelta(minutes=5))
    unauthenticated(await edge.decide(transport, bearer(token)), "CREDENTIALS_EXPIRED")


async def test_tampered_signature(
    edge: Edge, platform: Platform, key: provision.Key, transport: str
) -> None:
    token = (await provision.issue_token(platform, key)).access_token
    head, payload, signature = token.split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    tampered = f"{head}.{payload}.{signature[:middle]}{flipped}{signature[middle + 1 :]}"
    unauthenticated(await edge.decide(transport, bearer(tampered)), "CREDENTIALS_INVALID")


async def test_tampered_claims(
    edge: Edge, platform: Platform, key: provision.Key, transport: str
) -> None:
    other = await provision.create_tenant(platform)
    token = (await provision.issue_token(platform, key)).access_token
    head, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["tenant"] = other
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    unauthenticated(
        await edge.decide(transport, bearer(f"{head}.{forged}.{signature}"), tenant_id=other),
        "CREDENTIALS_INVALID",
    )


async def test_wrong_audience(
    edge: Edge, platform: Platform, key: provision.Key, transport: str
) -> None:
    token = (await provision.issue_token(platform, key, audience="partner-api")).access_token
    unauthenticated(await edge.decide(transport, bearer(token)), "AUDIENCE_MISMATCH")


async def test_unknown_signing_key(
    edge: Edge, owner_engine: AsyncEngine, key: provision.Key, transport: str
) -> None:
    stranger, _ = signing.generate()
    token = await forge(
        owner_engine, key, expires_at=datetime.now(UTC) + timedelta(minutes=5), signer=stranger
    )
    unauthenticated(await edge.decide(transport, bearer(token)), "CREDENTIALS_INVALID")


async def test_revoked_key_and_its_tokens_are_refused_within_the_cache_bound(
    edge: Edge, platform: Platform, key: provision.Key, transport: str
) -> None:
    token = (await provision.issue_token(platform, key)).access_token
    assert (await edge.decide(transport, api_key(key))).http == 200
    assert (await edge.decide(transport, bearer(token))).http == 200
    await provision.revoke_key(platform, key)
    # The edge reuses a key lookup for at most api_key_cache_ttl_s (1 s by default).
    await asyncio.sleep(DEFAULTS["api_key_cache_ttl_s"].default + 0.3)
    unauthenticated(await edge.decide(transport, api_key(key)), "CREDENTIALS_REVOKED")
    unauthenticated(await edge.decide(transport, bearer(token)), "CREDENTIALS_REVOKED")


async def test_expired_key(
    edge: Edge,
    platform: Platform,
    admin_db: asyncpg.Connection,
    tenant: str,
    transport: str,
) -> None:
    key = await provision.create_key(platform, tenant)
    # No API sets a past expiry; back-date it before the edge ever sees the key.
    await admin_db.execute(
        "UPDATE app.api_keys SET expires_at = now() - interval '1 minute' WHERE key_id = $1",
        key.key_id,
    )
    unauthenticated(await edge.decide(transport, api_key(key)), "CREDENTIALS_EXPIRED")


async def test_missing_scope(edge: Edge, platform: Platform, tenant: str, transport: str) -> None:
    key = await provision.create_key(platform, tenant, scopes=("chat:write",))
    token = (await provision.issue_token(platform, key)).access_token
    for headers in (api_key(key), bearer(token)):
        outcome = await edge.decide(transport, headers)
        assert (outcome.http, outcome.code, outcome.reason) == (403, 7, "SCOPE_MISSING"), outcome


async def test_admin_scope_grants_tenant_methods(
    edge: Edge, platform: Platform, tenant: str, transport: str
) -> None:
    key = await provision.create_key(platform, tenant, scopes=("admin",))
    assert (await edge.decide(transport, api_key(key), tenant_id=tenant)).http == 200
