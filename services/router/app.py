"""Composition root of the router service."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from nats.aio.client import Client as NatsClient
from pydantic import Field
from pydantic_settings import SettingsConfigDict
from redis.asyncio import Redis

from services.kit import channels, db, events
from services.kit.settings import ServiceSettings
from services.kit.telemetry import Telemetry
from services.router import features, outcomes
from services.router.engine import EngineConfig, Router
from services.router.metrics import RouterMetrics
from services.router.registry import PolicyRegistry
from services.router.servicer import RouterServicer
from services.router.store import RouterStore
from services.router.tenants import TenantPolicies
from supportmesh.control.v1 import control_service_pb2_grpc as control_grpc
from supportmesh.router.v1 import router_service_pb2 as pb
from supportmesh.router.v1 import router_service_pb2_grpc as pb_grpc

_log = logging.getLogger("supportmesh.router")

SERVICE_NAMES = (pb.DESCRIPTOR.services_by_name["RouterService"].full_name,)
SHIPPED_MODEL = Path(__file__).resolve().parents[2] / "data" / "router" / "model"


class RouterSettings(ServiceSettings):
    """Router settings, read from ``ROUTER_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="ROUTER_", frozen=True, extra="ignore")

    service_name: str = "router"
    control_target: str = Field(
        "", description="ControlService host:port for policy-version writes; empty: none."
    )
    model_uri: str = Field(
        "", description="Artifact served without a STABLE version; empty: the shipped one."
    )
    registry_refresh_s: float = Field(5.0, description="How often policy versions are re-read.")
    tenant_cache_ttl_s: float = Field(10.0, description="How long plan limits/switches are cached.")
    state_cache_ttl_s: float = Field(2.0, description="How long bandit counters are cached.")
    decision_ttl_s: int = Field(3600, description="How long decisions are kept for feedback.")
    explore_cap: float = Field(0.05, description="Largest share of decisions that explore.")
    prior_strength: float = Field(20.0, description="Pseudo-observations of the bandit prior.")
    error_cost_usd: dict[str, float] = Field(
        default_factory=lambda: {"free": 0.005, "pro": 0.02, "enterprise": 0.05},
        description="λ: the price of a wrong answer in USD, by plan id.",
    )
    default_error_cost_usd: float = Field(0.02, description="λ for plans not listed above.")
    canary_margin: float = Field(0.05, description="Success-rate drop a canary is allowed.")
    canary_min_samples: int = Field(50, description="Outcomes per arm before judging a canary.")
    canary_confidence: float = Field(0.95, description="One-sided confidence of a rollback.")
    judge_threshold: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Judge scores (0–1) below this fail an answer reported as successful.",
    )
    novelty_ring: int = Field(64, description="Recent queries remembered per tenant.")
    novelty_tenants: int = Field(256, description="Tenants whose recent queries are remembered.")


@dataclass
class RouterApp:
    """The router's servicer and the background work around it."""

    settings: RouterSettings
    router: Router
    registry: PolicyRegistry
    service_names: tuple[str, ...] = SERVICE_NAMES
    redis: Redis | None = None
    engine: Any = None
    control_channel: grpc.aio.Channel | None = None
    nats: NatsClient | None = None
    consumer: events.Consumer | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def register(self, server: grpc.aio.Server) -> None:
        """Add the RouterService to a server."""
        pb_grpc.add_RouterServiceServicer_to_server(RouterServicer(self.router), server)

    async def start(self) -> None:
        """Read the registry once, then refresh it and consume run outcomes in the background."""
        try:
            async with asyncio.timeout(10.0):
                await self.registry.refresh()
        except Exception:  # noqa: BLE001 - serve with what loaded; the loop retries
            _log.warning("first policy registry read failed", exc_info=True)
        self._tasks.append(asyncio.create_task(self.registry.run(self.settings.registry_refresh_s)))
        if self.settings.infra.nats_url:
            self._tasks.append(asyncio.create_task(self._consume(self.settings.infra.nats_url)))

    async def _consume(self, url: str) -> None:
        # Retried until it works: NATS may come up after the router in a fresh deployment.
        while self.consumer is None:
            try:
                self.nats, js = await events.connect(url)
                consumer = events.Consumer(js, outcomes.SPEC, outcomes.handler(self.router))
                await consumer.start()
                self.consumer = consumer
            except Exception:  # noqa: BLE001 - keep deciding; learning from runs resumes later
                _log.warning("run-outcome consumer not started; retrying", exc_info=True)
                await asyncio.sleep(2.0)

    async def stop(self) -> None:
        """Stop background work and close connections."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.consumer is not None:
            await self.consumer.stop()
        if self.nats is not None:
            await self.nats.close()
        await self.router.aclose()
        await self.router.tenants.aclose()
        if self.control_channel is not None:
            await self.control_channel.close()
        if self.redis is not None:
            await self.redis.aclose()
        if self.engine is not None:
            await self.engine.dispose()


def build(settings: RouterSettings, telemetry: Telemetry) -> RouterApp:
    """Wire the router from settings; connections open lazily on first use."""
    infra = settings.infra
    metrics = RouterMetrics(telemetry.registry)
    engine = db.create_engine(infra.database_url, pool_size=5) if infra.database_url else None
    redis = None
    if infra.redis_url:
        # Short timeouts: Valkey trouble must cost a decision milliseconds, not seconds.
        redis = Redis.from_url(
            infra.redis_url, decode_responses=True, socket_timeout=0.25, socket_connect_timeout=0.5
        )
    channel = None
    if settings.control_target:
        channel = channels.create_channel(settings.control_target, settings, telemetry)
    default_uri = settings.model_uri or (str(SHIPPED_MODEL) if SHIPPED_MODEL.is_dir() else "")
    registry = PolicyRegistry(
        engine,
        default_uri,
        metrics,
        control=control_grpc.ControlServiceStub(channel) if channel is not None else None,
    )
    tenants = TenantPolicies(
        engine,
        ttl_s=settings.tenant_cache_ttl_s,
        error_costs=settings.error_cost_usd,
        default_cost=settings.default_error_cost_usd,
    )
    config = EngineConfig(
        explore_cap=settings.explore_cap,
        prior_strength=settings.prior_strength,
        canary_margin=settings.canary_margin,
        canary_min_samples=settings.canary_min_samples,
        canary_confidence=settings.canary_confidence,
        state_ttl_s=settings.state_cache_ttl_s,
        judge_threshold=settings.judge_threshold,
    )
    store = None if redis is None else RouterStore(redis, decision_ttl_s=settings.decision_ttl_s)
    novelty = features.NoveltyIndex(settings.novelty_ring, settings.novelty_tenants)
    router = Router(registry, tenants, store, metrics, config, novelty)
    return RouterApp(
        settings, router, registry, redis=redis, engine=engine, control_channel=channel
    )
