"""A tenant's native gRPC client of an orchestrator, with the edge's trusted tenant metadata."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc

from services.kit import context
from supportmesh.orchestrator.v1 import orchestrator_service_pb2 as pb
from supportmesh.orchestrator.v1 import orchestrator_service_pb2_grpc as pb_grpc
from supportmesh.spec.v1 import message_pb2

TIMEOUT = 60.0


@dataclass
class Rpc:
    """OrchestratorService calls as ``tenant``."""

    tenant: str
    stub: pb_grpc.OrchestratorServiceAsyncStub

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((context.TENANT_KEY, self.tenant),)

    def stream_request(
        self, message: str, request_id: str, session_id: str = "session-1", **more: Any
    ) -> pb.StreamRunRequest:
        request = pb.StreamRunRequest(
            message=message, tenant_id=self.tenant, user_id="u1", session_id=session_id,
            request_id=request_id,
        )  # fmt: skip
        request.context.update(more)
        return request

    def open_stream(self, request: pb.StreamRunRequest) -> Any:
        """The StreamRun call, to read from (or cancel)."""
        return self.stub.StreamRun(request, metadata=self.metadata, timeout=TIMEOUT)

    async def stream(
        self, message: str, request_id: str, **more: Any
    ) -> list[message_pb2.StreamEvent]:
        """Every event of a StreamRun call."""
        call = self.open_stream(self.stream_request(message, request_id, **more))
        return [event async for event in call]

    async def chat(self, message: str, request_id: str, **more: Any) -> pb.SendChatMessageResponse:
        request = pb.SendChatMessageRequest(
            message=message, tenant_id=self.tenant, user_id="u1", request_id=request_id
        )
        request.context.update(more)
        reply: pb.SendChatMessageResponse = await self.stub.SendChatMessage(
            request, metadata=self.metadata, timeout=TIMEOUT
        )
        return reply

    def name(self, run_id: str) -> str:
        return f"tenants/{self.tenant}/runs/{run_id}"

    async def get(self, run_id: str) -> pb.Run:
        reply = await self.stub.GetRun(
            pb.GetRunRequest(name=self.name(run_id)), metadata=self.metadata, timeout=TIMEOUT
        )
        return reply.run

    async def runs(self) -> list[pb.Run]:
        reply = await self.stub.ListRuns(
            pb.ListRunsRequest(parent=f"tenants/{self.tenant}", page_size=1000),
            metadata=self.metadata, timeout=TIMEOUT,
        )  # fmt: skip
        return list(reply.runs)

    async def cancel(self, run_id: str, reason: str) -> pb.Run:
        reply = await self.stub.CancelRun(
            pb.CancelRunRequest(name=self.name(run_id), reason=reason),
            metadata=self.metadata, timeout=TIMEOUT,
        )  # fmt: skip
        return reply.run


@asynccontextmanager
async def connect(target: str, tenant: str) -> AsyncIterator[Rpc]:
    """An :class:`Rpc` for ``tenant`` over a channel to ``target``."""
    async with grpc.aio.insecure_channel(target) as channel:
        yield Rpc(tenant, pb_grpc.OrchestratorServiceStub(channel))
