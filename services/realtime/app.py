"""Composition root of the realtime service."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import grpc
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.kit import channels, valkey
from services.kit.settings import ServiceSettings
from services.kit.telemetry import Telemetry
from services.realtime.answers import Answers
from services.realtime.connection import Limits, Realtime
from services.realtime.hub import Hub
from services.realtime.metrics import RealtimeMetrics
from services.realtime.nudges import Nudges
from services.realtime.servicer import RealtimeServicer
from services.realtime.sessions import Sessions
from supportmesh.orchestrator.v1 import orchestrator_service_pb2_grpc as orchestrator_grpc
from supportmesh.realtime.v1 import realtime_service_pb2 as pb
from supportmesh.realtime.v1 import realtime_service_pb2_grpc as pb_grpc

_log = logging.getLogger("supportmesh.realtime")
SERVICE_NAMES = (pb.DESCRIPTOR.services_by_name["RealtimeService"].full_name,)


class RealtimeSettings(ServiceSettings):
    """Realtime settings, read from ``REALTIME_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="REALTIME_", frozen=True, extra="ignore")

    service_name: str = "realtime"
    orchestrator_target: str = Field("127.0.0.1:50055", description="OrchestratorService.")
    max_message_bytes: int = Field(
        64 * 1024, description="Largest gRPC frame accepted or sent (64 KiB)."
    )
    max_concurrent_rpcs: int = Field(10_000, description="Streams served at once.")
    buffer_events: int = Field(32, ge=1, description="Events a slow client's buffer holds.")
    max_delta_chars: int = Field(8192, ge=1, description="Largest coalesced token delta.")
    ack_window: int = Field(64, ge=1, description="Unacknowledged events an acking client gets.")
    heartbeat_s: float = Field(15.0, gt=0, description="Heartbeat interval on a quiet stream.")
    idle_timeout_s: float = Field(300.0, gt=0, description="Chat closes after this long idle.")
    poll_s: float = Field(
        1.0,
        gt=0,
        description="How often a stream looks for remote answers (quiet: up to 8x; a "
        "message queued elsewhere wakes it at once).",
    )
    max_message_chars: int = Field(8000, ge=1, description="Longest user message.")
    max_connections_per_tenant: int = Field(1000, ge=1, description="Open streams per tenant.")
    session_ttl_s: int = Field(3600, ge=60, description="How long a quiet session is kept.")
    session_max_events: int = Field(5000, ge=100, description="Events kept per session.")
    answer_timeout_s: float = Field(60.0, gt=0, description="Deadline of one answer's run.")
    lease_ms: int = Field(5000, ge=100, description="Answer lease; a crash is noticed after it.")
    valkey_max_connections: int = Field(
        512, ge=8, description="Valkey connections (a stream tailing another instance holds one)."
    )


@dataclass
class RealtimeApp:
    """The servicer and its connections (Valkey, the orchestrator channel)."""

    settings: RealtimeSettings
    telemetry: Telemetry
    service_names: tuple[str, ...] = SERVICE_NAMES
    realtime: Realtime | None = None
    nudges: Nudges | None = None
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack)

    def register(self, server: grpc.aio.Server) -> None:
        """Add the RealtimeService to a server."""
        assert self.realtime is not None, "start() first"
        pb_grpc.add_RealtimeServiceServicer_to_server(RealtimeServicer(self.realtime), server)

    async def start(self) -> None:
        """Connect to Valkey and the orchestrator."""
        s = self.settings
        if not s.infra.redis_url:
            raise RuntimeError("the realtime service needs REDIS_URL")
        redis = valkey.connect(s.infra.redis_url, max_connections=s.valkey_max_connections)
        self._stack.push_async_callback(redis.aclose)
        channel = channels.create_channel(
            s.orchestrator_target, s, self.telemetry, default_timeout_s=s.answer_timeout_s
        )
        self._stack.push_async_callback(channel.close)
        sessions = Sessions(
            redis, ttl_s=s.session_ttl_s, max_events=s.session_max_events, lease_ms=s.lease_ms
        )
        answers = Answers(
            sessions, Hub(), orchestrator_grpc.OrchestratorServiceStub(channel),
            tracer=self.telemetry.tracer, answer_timeout_s=s.answer_timeout_s,
        )  # fmt: skip
        self._stack.push_async_callback(answers.stop)
        self.nudges = Nudges(sessions, answers.hub, retry_s=s.poll_s)
        self._stack.push_async_callback(self.nudges.stop)
        limits = Limits(
            buffer_events=s.buffer_events, max_delta_chars=s.max_delta_chars,
            ack_window=s.ack_window, heartbeat_s=s.heartbeat_s, idle_timeout_s=s.idle_timeout_s,
            poll_s=s.poll_s, max_message_chars=s.max_message_chars,
            max_connections_per_tenant=s.max_connections_per_tenant,
        )  # fmt: skip
        metrics = RealtimeMetrics(self.telemetry.registry)
        self.realtime = Realtime(sessions, answers.hub, answers, metrics, limits)
        _log.info("realtime started", extra={"orchestrator": s.orchestrator_target})

    async def stop(self) -> None:
        """Stop answering and close connections."""
        await self._stack.aclose()


def build(settings: RealtimeSettings, telemetry: Telemetry) -> RealtimeApp:
    """Wire the realtime service from settings; connections open in ``start()``."""
    return RealtimeApp(settings, telemetry)
