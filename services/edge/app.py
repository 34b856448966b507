"""Composition root of the edge: AuthService (gRPC), ext_authz and the WebSocket bridge (HTTP)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import timedelta

import grpc
from aiohttp import web
from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict
from redis.asyncio import Redis
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.edge.authn import Authenticator
from services.edge.authz import Gate
from services.edge.credentials import KeyDirectory
from services.edge.ext_authz import Authorizer
from services.edge.issuance import Issuer
from services.edge.limits import Limiter
from services.edge.servicer import AuthServicer
from services.edge.signing import KeyStore
from services.edge.tokens import KeyRing, TokenVerifier
from services.edge.websocket import ChatBridge
from services.kit import channels, db, valkey
from services.kit.settings import ServiceSettings
from services.kit.telemetry import Telemetry
from supportmesh.edge.v1 import auth_service_pb2 as pb
from supportmesh.edge.v1 import auth_service_pb2_grpc as pb_grpc
from supportmesh.realtime.v1 import realtime_service_pb2_grpc as realtime_grpc

_log = logging.getLogger("supportmesh.edge")
SERVICE_NAMES = (pb.DESCRIPTOR.services_by_name["AuthService"].full_name,)


class EdgeSettings(ServiceSettings):
    """Edge settings, read from ``EDGE_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="EDGE_", frozen=True, extra="ignore")

    service_name: str = "edge"
    platform_admin_key_sha256: str = Field(
        "", description="Hex SHA-256 of the platform operator key's secret; empty: no operator."
    )
    issuer: str = Field("supportmesh-edge", description="The `iss` of issued tokens.")
    audience: str = Field(
        "supportmesh", description="The `aud` the public API accepts, and the token default."
    )
    token_max_ttl_s: int = Field(3600, gt=0, le=3600, description="Longest token lifetime.")
    api_key_cache_ttl_s: float = Field(
        1.0,
        gt=0,
        le=1.0,
        description="How long a key lookup is reused: the bound on how late a revocation bites.",
    )
    signing_keys_refresh_s: float = Field(
        2.0, gt=0, description="Interval between reloads of the signing keys (rotation, retiring)."
    )
    unknown_kid_reload_s: float = Field(
        0.5, ge=0, description="Least time between reloads triggered by an unknown token kid."
    )
    signing_key_bits: int = Field(2048, ge=2048, description="RSA modulus size of new keys.")
    database_pool_size: int = Field(5, gt=0, description="PostgreSQL connections kept open.")
    http_port: int = Field(
        -1,
        description="Port of Envoy's ext_authz requests and the WebSocket chat bridge; 0 picks "
        "a free one, -1 serves neither (Envoy then refuses every call with 503).",
    )
    realtime_target: str = Field("127.0.0.1:50056", description="RealtimeService host:port.")
    websocket_max_frame_bytes: int = Field(
        64 * 1024, gt=0, description="Largest WebSocket frame accepted (close 1009 above)."
    )
    websocket_session_s: float = Field(
        3600.0, gt=0, description="Longest a WebSocket chat connection stays open."
    )

    @field_validator("platform_admin_key_sha256")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        if value and len(bytes.fromhex(value)) != 32:
            raise ValueError("must be a hex SHA-256 digest")
        return value


@dataclass(frozen=True)
class Edge:
    """The edge's parts, wired once."""

    engine: AsyncEngine
    redis: Redis
    ring: KeyRing
    authenticator: Authenticator
    gate: Gate
    issuer: Issuer


def assemble(settings: EdgeSettings) -> Edge:
    """Wire the edge's parts from settings (no I/O happens until first use)."""
    if not settings.infra.database_url or not settings.infra.redis_url:
        raise RuntimeError("the edge needs DATABASE_URL and REDIS_URL")
    engine = db.create_engine(settings.infra.database_url, pool_size=settings.database_pool_size)
    redis = valkey.connect(settings.infra.redis_url)
    store = KeyStore(engine, bits=settings.signing_key_bits)
    ring = KeyRing(
        store,
        refresh_s=settings.signing_keys_refresh_s,
        unknown_kid_interval_s=settings.unknown_kid_reload_s,
    )
    max_ttl = timedelta(seconds=settings.token_max_ttl_s)
    verifier = TokenVerifier(ring, issuer=settings.issuer, max_lifetime=max_ttl)
    platform_hash = settings.platform_admin_key_sha256
    authenticator = Authenticator(
        KeyDirectory(engine, ttl_s=settings.api_key_cache_ttl_s),
        verifier,
        platform_key_sha256=bytes.fromhex(platform_hash) if platform_hash else None,
    )
    gate = Gate(authenticator, Limiter(redis), audience=settings.audience)
    issuer = Issuer(
        authenticator, ring, issuer=settings.issuer, audience=settings.audience, max_ttl=max_ttl
    )
    return Edge(engine, redis, ring, authenticator, gate, issuer)


async def _warm(ring: KeyRing) -> None:
    try:
        await ring.ready()
    except (SQLAlchemyError, OSError):  # the first call retries; a late database is no crash
        _log.exception("loading signing keys at start failed; retrying on first use")


@dataclass
class EdgeApp:
    """The edge's gRPC servicers and its WebSocket bridge."""

    settings: EdgeSettings
    telemetry: Telemetry
    service_names: tuple[str, ...] = SERVICE_NAMES
    http_port: int = 0
    _edge: Edge | None = None
    _runner: web.AppRunner | None = None
    _channel: grpc.aio.Channel | None = None
    _background: set[asyncio.Task[None]] = field(default_factory=set)

    def register(self, server: grpc.aio.Server) -> None:
        """Add AuthService to ``server``."""
        edge, settings = self._wired(), self.settings
        pb_grpc.add_AuthServiceServicer_to_server(
            AuthServicer(edge.issuer, edge.ring, edge.authenticator, audience=settings.audience),
            server,
        )
        # Load (or create) the signing keys while the server starts, not on the first call.
        task = asyncio.get_running_loop().create_task(_warm(edge.ring))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _wired(self) -> Edge:
        if self._edge is None:
            self._edge = assemble(self.settings)
        return self._edge

    async def start(self) -> None:
        """Serve ext_authz and the WebSocket bridge (unless the HTTP port is -1)."""
        s = self.settings
        if s.http_port < 0:
            return
        gate, registry = self._wired().gate, self.telemetry.registry
        self._channel = channels.create_channel(
            s.realtime_target, s, self.telemetry, default_timeout_s=s.websocket_session_s
        )
        bridge = ChatBridge(
            gate, realtime_grpc.RealtimeServiceStub(self._channel), registry,
            max_frame_bytes=s.websocket_max_frame_bytes, session_s=s.websocket_session_s,
        )  # fmt: skip
        application = web.Application()
        Authorizer(gate, registry).install(application)
        bridge.install(application)
        self._runner = web.AppRunner(application, access_log=None)
        await self._runner.setup()
        # A burst of upgrades must queue, not overflow the default backlog of 128.
        site = web.TCPSite(self._runner, s.host, s.http_port, backlog=4096)
        await site.start()
        self.http_port = self._runner.addresses[0][1]
        _log.info("ext_authz and websocket bridge listening", extra={"port": self.http_port})

    async def stop(self) -> None:
        """Stop the HTTP side (WebSocket connections close with 1001) and the realtime channel."""
        if self._runner is not None:
            await self._runner.cleanup()
        if self._channel is not None:
            await self._channel.close()


def build(settings: EdgeSettings, telemetry: Telemetry) -> EdgeApp:
    """Wire the edge from settings; the bridge starts listening in ``start()``."""
    return EdgeApp(settings, telemetry)
