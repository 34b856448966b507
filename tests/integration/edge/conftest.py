"""Fixtures for the edge tests: clients of the real Envoy edge and one call shape for both
REST and native gRPC, so every check runs over each transport alike."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc
import httpx
import pytest
from redis.asyncio import Redis

from services.kit import errors
from services.kit.devstack import Platform
from supportmesh.router.v1 import router_service_pb2 as pb
from supportmesh.router.v1 import router_service_pb2_grpc as pb_grpc
from tests.integration.edge import provision

TRANSPORTS = ("rest", "grpc")
DECIDE = "/v1/router/decide"


@dataclass(frozen=True)
class Outcome:
    """How a Decide call ended, in terms shared by REST and gRPC."""

    http: int
    code: int
    reason: str
    retry_after: str | None = None
    retry_delay_s: float | None = None
    body: Mapping[str, Any] = field(default_factory=dict)


class Edge:
    """Calls RouterService.Decide through the edge over REST or native gRPC."""

    def __init__(self, http: httpx.AsyncClient, stub: pb_grpc.RouterServiceAsyncStub) -> None:
        self.http = http
        self.stub = stub

    async def decide(
        self, transport: str, headers: Mapping[str, str], tenant_id: str = ""
    ) -> Outcome:
        if transport == "rest":
            return await self._rest(headers, tenant_id)
        return await self._grpc(headers, tenant_id)

    async def _rest(self, headers: Mapping[str, str], tenant_id: str) -> Outcome:
        body = {"query": "Where is my parcel?", "tenant_id": tenant_id}
        reply = await self.http.post(DECIDE, json=body, headers=dict(headers))
        payload = reply.json()
        if reply.status_code == 200:
            return Outcome(200, 0, "", body=payload)
        infos = [d for d in payload["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
        assert len(infos) == 1, payload
        assert infos[0]["domain"] == "supportmesh.io"
        return Outcome(
            reply.status_code,
            payload["code"],
            infos[0]["reason"],
            retry_after=reply.headers.get("retry-after"),
            body=payload,
        )

    async def _grpc(self, headers: Mapping[str, str], tenant_id: str) -> Outcome:
        request = pb.DecideRequest(query="Where is my parcel?", tenant_id=tenant_id)
        try:
            await self.stub.Decide(request, metadata=tuple(headers.items()), timeout=10)
        except grpc.aio.AioRpcError as exc:
            remote = errors.parse_rpc_error(exc)
            metadata = dict(exc.trailing_metadata() or ()) | dict(exc.initial_metadata() or ())
            retry_after = metadata.get("retry-after")
            return Outcome(
                errors.HTTP_STATUS[remote.code],
                remote.code.value[0],
                remote.reason,
                retry_after=str(retry_after) if retry_after is not None else None,
                retry_delay_s=remote.retry_after_s,
            )
        return Outcome(200, 0, "")


@pytest.fixture(scope="module")
async def http(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=platform.edge_url, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
async def edge(platform: Platform, http: httpx.AsyncClient) -> AsyncIterator[Edge]:
    async with grpc.aio.insecure_channel(provision.edge_target(platform)) as channel:
        yield Edge(http, pb_grpc.RouterServiceStub(channel))


@pytest.fixture(scope="module")
async def admin_db(platform: Platform) -> AsyncIterator[asyncpg.Connection]:
    """A superuser connection, for what no API offers (back-dating a key's expiry)."""
    connection = await asyncpg.connect(platform.admin_database_url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture(scope="module")
async def redis(platform: Platform) -> AsyncIterator[Redis]:
    client = Redis.from_url(platform.redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def tenant(platform: Platform) -> str:
    """A fresh tenant on the pro plan."""
    return await provision.create_tenant(platform)


@pytest.fixture
async def key(platform: Platform, tenant: str) -> provision.Key:
    """A fresh key of ``tenant`` allowed to call Decide."""
    return await provision.create_key(platform, tenant)


def api_key(key: provision.Key) -> dict[str, str]:
    """Headers presenting ``key`` as x-api-key."""
    return {"x-api-key": key.secret}


def bearer(credential: str) -> dict[str, str]:
    """Headers presenting ``credential`` as a bearer credential."""
    return {"authorization": f"Bearer {credential}"}
