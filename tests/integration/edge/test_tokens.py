"""AuthService through the edge: IssueToken narrows and caps, GetJwks publishes, and the
internal Introspect is not reachable from outside."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import grpc
import httpx
import pytest

from services.kit import errors
from services.kit.devstack import Platform
from supportmesh.edge.v1 import auth_service_pb2 as apb
from supportmesh.edge.v1 import auth_service_pb2_grpc as apb_grpc
from tests.integration.edge import provision
from tests.integration.edge.conftest import Edge, bearer


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


async def test_rest_token_carries_the_keys_identity(
    http: httpx.AsyncClient, platform: Platform, tenant: str
) -> None:
    key = await provision.create_key(platform, tenant, scopes=("router:decide", "chat:write"))
    reply = await http.post("/v1/auth/token", json={"apiKey": key.secret})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["tokenType"] == "Bearer"
    assert body["tenant"] == f"tenants/{tenant}"
    assert sorted(body["scopes"]) == ["chat:write", "router:decide"]
    claims = claims_of(body["accessToken"])
    assert claims["tenant"] == tenant
    assert claims["sub"] == key.name
    assert claims["aud"] == "supportmesh"
    assert claims["key_id"] == key.key_id
    assert 0 < claims["exp"] - claims["iat"] <= 3600


async def test_token_scopes_can_only_narrow(platform: Platform, tenant: str) -> None:
    key = await provision.create_key(platform, tenant, scopes=("router:decide", "chat:write"))
    narrowed = await provision.issue_token(platform, key, scopes=("chat:write",))
    assert list(narrowed.scopes) == ["chat:write"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await provision.issue_token(platform, key, scopes=("admin",))
    remote = errors.parse_rpc_error(caught.value)
    assert (remote.code, remote.reason) == (grpc.StatusCode.PERMISSION_DENIED, "SCOPE_MISSING")


async def test_narrowed_token_loses_the_dropped_scope(
    edge: Edge, platform: Platform, tenant: str
) -> None:
    key = await provision.create_key(platform, tenant, scopes=("router:decide", "chat:write"))
    narrowed = (await provision.issue_token(platform, key, scopes=("chat:write",))).access_token
    outcome = await edge.decide("rest", bearer(narrowed))
    assert (outcome.http, outcome.reason) == (403, "SCOPE_MISSING")


async def test_lifetime_is_capped_at_one_hour(platform: Platform, key: provision.Key) -> None:
    long = await provision.issue_token(platform, key, ttl_s=7 * 24 * 3600)
    claims = claims_of(long.access_token)
    assert claims["exp"] - claims["iat"] == 3600
    assert long.expire_time.seconds == claims["exp"]
    short = await provision.issue_token(platform, key, ttl_s=60)
    assert claims_of(short.access_token)["exp"] - time.time() <= 60


async def test_bad_keys_get_no_token(http: httpx.AsyncClient, platform: Platform) -> None:
    unknown = await http.post("/v1/auth/token", json={"apiKey": "smk_" + "a" * 16 + "_" + "b" * 43})
    assert unknown.status_code == 401
    assert unknown.json()["details"][0]["reason"] == "CREDENTIALS_INVALID"
    missing = await http.post("/v1/auth/token", json={})
    assert missing.status_code == 401
    operator = await http.post("/v1/auth/token", json={"apiKey": platform.platform_admin_key})
    assert operator.status_code == 400


async def test_jwks_publishes_the_signing_key(
    http: httpx.AsyncClient, key: provision.Key, platform: Platform
) -> None:
    issued = await provision.issue_token(platform, key)
    reply = await http.get("/v1/auth/jwks")
    assert reply.status_code == 200
    keys = reply.json()["keys"]
    assert issued.signing_key_id in {jwk["kid"] for jwk in keys}
    assert all(jwk["kty"] == "RSA" and jwk["alg"] == "RS256" and jwk["n"] for jwk in keys)


async def test_introspect_is_internal_only(platform: Platform, key: provision.Key) -> None:
    request = apb.IntrospectRequest(credential=key.secret)
    async with grpc.aio.insecure_channel(provision.edge_target(platform)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await apb_grpc.AuthServiceStub(channel).Introspect(request, timeout=10)
    # A 404 route answers gRPC callers UNIMPLEMENTED, with or without a credential.
    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
    # Inside the mesh it answers.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{platform.ports['edge']}") as channel:
        found = await apb_grpc.AuthServiceStub(channel).Introspect(request, timeout=10)
    assert (found.tenant_id, found.key_id) == (key.tenant, key.key_id)
    assert found.credential_type == apb.CREDENTIAL_TYPE_API_KEY
    assert list(found.scopes) == ["router:decide"]
