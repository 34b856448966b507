"""Tenants, API keys and tokens made the way a customer gets them: through the edge.

The platform operator key creates tenants and keys with ControlService over native gRPC
through Envoy; tokens come from AuthService.IssueToken over REST.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import grpc
import httpx
from google.protobuf import duration_pb2, timestamp_pb2

from services.kit.devstack import Platform
from supportmesh.control.v1 import control_service_pb2 as cpb
from supportmesh.control.v1 import control_service_pb2_grpc as cpb_grpc
from supportmesh.control.v1 import resources_pb2 as res
from supportmesh.edge.v1 import auth_service_pb2 as apb
from supportmesh.edge.v1 import auth_service_pb2_grpc as apb_grpc

TIMEOUT = 10.0


@dataclass(frozen=True)
class Key:
    """An API key as CreateApiKey returned it."""

    tenant: str
    name: str
    secret: str

    @property
    def key_id(self) -> str:
        """The key id (last segment of the name)."""
        return self.name.rsplit("/", 1)[1]


def edge_target(platform: Platform) -> str:
    """host:port of the Envoy edge for gRPC channels."""
    return platform.edge_url.removeprefix("http://")


def operator(platform: Platform) -> tuple[tuple[str, str], ...]:
    """Metadata carrying the platform operator key."""
    return (("x-api-key", platform.platform_admin_key),)


def unique(prefix: str = "e") -> str:
    """A fresh tenant id (the session's database is shared by every test)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def create_tenant(platform: Platform, plan: str = "plans/pro") -> str:
    """A new tenant on ``plan``; its id."""
    tenant = unique()
    async with grpc.aio.insecure_channel(edge_target(platform)) as channel:
        await cpb_grpc.ControlServiceStub(channel).CreateTenant(
            cpb.CreateTenantRequest(
                tenant=res.Tenant(display_name="Edge test", plan=plan),
                tenant_id=tenant,
                request_id=uuid.uuid4().hex,
            ),
            metadata=operator(platform),
            timeout=TIMEOUT,
        )
    return tenant


async def create_key(
    platform: Platform,
    tenant: str,
    scopes: tuple[str, ...] = ("router:decide",),
    *,
    requests_per_minute: int = 0,
    expire_time: datetime | None = None,
) -> Key:
    """A new API key of ``tenant``."""
    key = res.ApiKey(
        display_name="edge test", scopes=list(scopes), requests_per_minute=requests_per_minute
    )
    if expire_time is not None:
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(expire_time)
        key.expire_time.CopyFrom(stamp)
    async with grpc.aio.insecure_channel(edge_target(platform)) as channel:
        created = await cpb_grpc.ControlServiceStub(channel).CreateApiKey(
            cpb.CreateApiKeyRequest(
                parent=f"tenants/{tenant}", api_key=key, request_id=uuid.uuid4().hex
            ),
            metadata=operator(platform),
            timeout=TIMEOUT,
        )
    return Key(tenant, created.api_key.name, created.secret)


async def revoke_key(platform: Platform, key: Key) -> None:
    """Revoke ``key`` as the operator."""
    async with grpc.aio.insecure_channel(edge_target(platform)) as channel:
        await cpb_grpc.ControlServiceStub(channel).RevokeApiKey(
            cpb.RevokeApiKeyRequest(name=key.name, reason="test", request_id=uuid.uuid4().hex),
            metadata=operator(platform),
            timeout=TIMEOUT,
        )


async def issue_token(
    platform: Platform,
    key: Key,
    *,
    scopes: tuple[str, ...] = (),
    audience: str = "",
    ttl_s: int = 0,
) -> apb.IssueTokenResponse:
    """Exchange ``key`` for a JWT over native gRPC (no credential needed besides the key)."""
    request = apb.IssueTokenRequest(api_key=key.secret, scopes=list(scopes), audience=audience)
    if ttl_s:
        request.ttl.CopyFrom(duration_pb2.Duration(seconds=ttl_s))
    async with grpc.aio.insecure_channel(edge_target(platform)) as channel:
        reply: apb.IssueTokenResponse = await apb_grpc.AuthServiceStub(channel).IssueToken(
            request, timeout=TIMEOUT
        )
    return reply


async def rest_token(http: httpx.AsyncClient, key: Key) -> str:
    """Exchange ``key`` for a JWT over REST; the bearer token."""
    reply = await http.post("/v1/auth/token", json={"apiKey": key.secret})
    assert reply.status_code == 200, reply.text
    return str(reply.json()["accessToken"])
