"""An in-process router wired to the session platform's PostgreSQL, Valkey, NATS and control."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import grpc
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis.asyncio import Redis

from services.kit import context
from services.kit.devstack import Platform
from services.kit.server import Service, start_server
from services.kit.settings import InfraSettings
from services.kit.telemetry import Telemetry
from services.router.app import RouterApp, RouterSettings, build
from supportmesh.router.v1 import router_service_pb2_grpc as pb_grpc


@dataclass
class Harness:
    """The router under test and handles on its stores."""

    app: RouterApp
    service: Service
    stub: pb_grpc.RouterServiceAsyncStub
    telemetry: Telemetry
    redis: Redis
    admin_url: str
    platform: Platform
    spans: InMemorySpanExporter

    async def tenant(self, plan: str = "pro", *, prefer_slm: bool = False) -> str:
        """Insert a fresh tenant on ``plan`` (and its degrade switch) as setup."""
        tenant = f"rt-{uuid.uuid4().hex[:10]}"
        connection = await asyncpg.connect(self.admin_url)
        try:
            await connection.execute(
                "INSERT INTO app.tenants (tenant_id, display_name, plan_id) VALUES ($1, $1, $2)",
                tenant,
                plan,
            )
            if prefer_slm:
                await connection.execute(
                    "INSERT INTO app.degrade_switches (tenant_id, prefer_slm_tiers, reason) "
                    "VALUES ($1, true, 'router test: overload')",
                    tenant,
                )
        finally:
            await connection.close()
        return tenant

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A sample of the router's Prometheus registry (0 when absent)."""
        value = self.telemetry.registry.get_sample_value(name, labels or {})
        return 0.0 if value is None else value


def as_tenant(tenant: str) -> tuple[tuple[str, str], ...]:
    """The trusted metadata the edge would set for ``tenant``."""
    return ((context.TENANT_KEY, tenant),)


@pytest.fixture(scope="module")
async def router(platform: Platform) -> AsyncIterator[Harness]:
    settings = RouterSettings(
        infra=InfraSettings(
            database_url=platform.database_url,
            redis_url=platform.redis_url,
            nats_url=platform.nats_url,
        ),
        control_target=f"127.0.0.1:{platform.ports['control']}",
        canary_min_samples=20,
        # Long TTLs on purpose: the tests refresh the registry explicitly.
        registry_refresh_s=3600,
    )
    spans = InMemorySpanExporter()
    telemetry = Telemetry("router-it", span_processors=(SimpleSpanProcessor(spans),))
    app = build(settings, telemetry)
    await app.start()
    service = await start_server(settings, app.register, app.service_names, telemetry)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
    redis = Redis.from_url(platform.redis_url, decode_responses=True)
    try:
        yield Harness(
            app, service, pb_grpc.RouterServiceStub(channel), telemetry, redis,
            platform.admin_database_url, platform, spans,
        )  # fmt: skip
    finally:
        await redis.aclose()
        await channel.close()
        await service.stop()
        await app.stop()
