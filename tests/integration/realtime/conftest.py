"""Fixtures for the realtime tests: a tenant whose knowledge holds a policy, chat helpers,
and extra realtime instances started in-process against the session's Valkey and
orchestrator (to resume across instances, or with small limits)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest

from services.kit import context
from services.kit.devstack import Platform
from services.kit.server import Service, start_server
from services.kit.settings import InfraSettings
from services.kit.telemetry import Telemetry
from services.realtime.app import RealtimeApp, RealtimeSettings
from supportmesh.realtime.v1 import realtime_service_pb2 as pb
from supportmesh.realtime.v1 import realtime_service_pb2_grpc as pb_grpc
from supportmesh.spec.v1 import message_pb2
from tests.integration.edge import provision
from tests.integration.orchestrator.conftest import Client

SCOPES = ("chat:write", "runs:read", "knowledge:read", "knowledge:write")
POLICY = (
    "Returns are accepted within 30 days of delivery for a full refund. "
    "Refunds go back to the original payment method within 5 business days once the "
    "parcel reaches our warehouse. Items must be unused and in their original packaging, "
    "with the receipt or the order number included in the parcel."
)
QUESTION = "How long do I have to return an item for a refund?"


@dataclass(frozen=True)
class Tenant:
    """A tenant with a chat key whose knowledge holds :data:`POLICY`."""

    id: str
    key: str


@pytest.fixture(scope="session")
async def tenant(platform: Platform) -> Tenant:
    """The realtime tests' tenant (pro plan: 500 connections)."""
    tenant_id = await provision.create_tenant(platform)
    key = await provision.create_key(platform, tenant_id, SCOPES)
    async with httpx.AsyncClient(
        base_url=platform.edge_url, headers={"x-api-key": key.secret}, timeout=60.0
    ) as http:
        client = Client(tenant_id, http)
        await client.learn(POLICY)
        await client.warm_up()
    return Tenant(tenant_id, key.secret)


@pytest.fixture
async def fresh_tenant(platform: Platform) -> Tenant:
    """A new tenant with an empty knowledge base (nobody else's streams count against it)."""
    tenant_id = await provision.create_tenant(platform)
    key = await provision.create_key(platform, tenant_id, SCOPES)
    return Tenant(tenant_id, key.secret)


@pytest.fixture(scope="session")
async def edge_stub(platform: Platform) -> AsyncIterator[pb_grpc.RealtimeServiceStub]:
    """RealtimeService over native gRPC through the Envoy edge."""
    async with grpc.aio.insecure_channel(provision.edge_target(platform)) as channel:
        yield pb_grpc.RealtimeServiceStub(channel)


class Chat:
    """One bidirectional Chat stream with helpers to open, talk and read."""

    def __init__(self, stub: pb_grpc.RealtimeServiceStub, metadata: tuple[tuple[str, str], ...]):
        """Open the stream (frames are sent with the helpers)."""
        chat: Any = stub.Chat
        self.call: Any = chat(metadata=metadata, timeout=120)
        self.session_id = ""

    async def open(self, session_id: str = "", last_seen: int = 0, user: str = "u1") -> None:
        """Send the open frame and read the greeting heartbeat (which names the session)."""
        opening = pb.OpenSession(session_id=session_id, last_seen_sequence=last_seen, user_id=user)
        await self.call.write(pb.ChatRequest(open=opening))
        first = await self.call.read()
        assert first.WhichOneof("event") == "heartbeat", first
        self.session_id = first.session_id

    async def say(self, text: str, request_id: str = "") -> None:
        """Send a user message."""
        message = pb.UserMessage(text=text, request_id=request_id)
        await self.call.write(pb.ChatRequest(user_message=message))

    async def ack(self, sequence: int) -> None:
        """Acknowledge events up to ``sequence``."""
        await self.call.write(pb.ChatRequest(ack=pb.Ack(sequence=sequence)))

    async def next(self) -> message_pb2.StreamEvent:
        """The next event that is not a heartbeat."""
        while True:
            event = await self.call.read()
            assert event is not grpc.aio.EOF, "the stream ended"
            if event.WhichOneof("event") != "heartbeat":
                return event  # type: ignore[no-any-return]

    async def until_final(
        self, pause_s: float = 0.0, ack: bool = False
    ) -> list[message_pb2.StreamEvent]:
        """Events up to and including the next final message or error."""
        found = []
        while True:
            event = await self.next()
            found.append(event)
            if ack:
                await self.ack(event.sequence)
            if event.WhichOneof("event") in ("final_message", "error"):
                return found
            if pause_s:
                await asyncio.sleep(pause_s)


def key_metadata(tenant: Tenant) -> tuple[tuple[str, str], ...]:
    """Metadata authenticating as the tenant's key at the edge."""
    return (("x-api-key", tenant.key),)


def mesh_metadata(tenant: Tenant) -> tuple[tuple[str, str], ...]:
    """The trusted metadata the edge sets, for calls made inside the mesh."""
    return ((context.TENANT_KEY, tenant.id), (context.SUBJECT_KEY, "svc-test"))


@dataclass
class Instance:
    """A realtime instance started in this process."""

    app: RealtimeApp
    service: Service
    channel: grpc.aio.Channel

    @property
    def stub(self) -> pb_grpc.RealtimeServiceStub:
        """A stub for the instance (mesh-internal: pass :func:`mesh_metadata`)."""
        return pb_grpc.RealtimeServiceStub(self.channel)

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the instance's Prometheus registry."""
        value = self.app.telemetry.registry.get_sample_value(name, labels)
        return float(value or 0.0)

    async def stop(self) -> None:
        """Stop serving and answering."""
        await self.channel.close()
        await self.service.server.stop(0)
        await self.app.stop()


StartInstance = Callable[..., Awaitable[Instance]]


@pytest.fixture
async def start_instance(platform: Platform) -> AsyncIterator[StartInstance]:
    """Start realtime instances (stopped at the end of the test)."""
    started: list[Instance] = []

    async def start(**overrides: Any) -> Instance:
        settings = RealtimeSettings(
            port=0, orchestrator_target=f"127.0.0.1:{platform.ports['orchestrator']}",
            infra=InfraSettings(redis_url=platform.redis_url), **overrides,
        )  # fmt: skip
        app = RealtimeApp(settings, Telemetry(f"realtime-test-{len(started)}"))
        await app.start()
        service = await start_server(settings, app.register, app.service_names, app.telemetry)
        instance = Instance(app, service, grpc.aio.insecure_channel(f"127.0.0.1:{service.port}"))
        started.append(instance)
        return instance

    yield start
    for instance in started:
        await instance.stop()
