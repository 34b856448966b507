"""OrchestratorService servicer: proto in, :class:`services.orchestrator.runs.Runs`, proto out."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import json_format

from services.kit import errors, tenancy
from services.orchestrator import convert, intent, record, store, streaming
from services.orchestrator.runs import Runs
from supportmesh.orchestrator.v1 import orchestrator_service_pb2 as pb
from supportmesh.orchestrator.v1 import orchestrator_service_pb2_grpc as pb_grpc
from supportmesh.spec.v1 import message_pb2

_Context = grpc.aio.ServicerContext[Any, Any]
MAX_MESSAGE_CHARS = 8000


def _cursor(token: str) -> tuple[str, str] | None:
    if not token:
        return None
    try:
        at, _, run_id = base64.urlsafe_b64decode(token.encode()).decode().partition("|")
    except ValueError:
        raise errors.InvalidArgument("page_token is not valid", field="page_token") from None
    if not run_id:
        raise errors.InvalidArgument("page_token is not valid", field="page_token")
    return at, run_id


def _check_message(message: str) -> None:
    if not message.strip():
        raise errors.InvalidArgument("message must not be empty", field="message")
    if len(message) > MAX_MESSAGE_CHARS:
        raise errors.InvalidArgument("message is too long", field="message")


def _dict(message: Any, field: str) -> dict[str, Any]:
    found = json_format.MessageToDict(getattr(message, field)) if message.HasField(field) else {}
    return {key: _ints(value) for key, value in found.items()}


def _ints(value: Any) -> Any:
    """JSON numbers arrive as floats in a Struct; whole ones become ints again (cents, counts)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _ints(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_ints(item) for item in value]
    return value


class OrchestratorServicer(pb_grpc.OrchestratorServiceServicer):
    """Thin adapter between the OrchestratorService contract and :class:`Runs`."""

    def __init__(self, runs: Runs) -> None:
        """Serve runs through ``runs``."""
        self._runs = runs

    async def SendChatMessage(  # noqa: N802 - gRPC method name
        self, request: pb.SendChatMessageRequest, context: _Context
    ) -> pb.SendChatMessageResponse:
        """Pick the workflow for the message, run it and answer."""
        tenant = tenancy.check_claimed_tenant(request.tenant_id)
        _check_message(request.message)
        began = time.perf_counter()
        given = _dict(request, "context")
        workflow = intent.classify(request.message, given)
        session = request.session_id or record.new_run_id()
        run_id, view = await self._runs.run(
            tenant, workflow, "", intent.workflow_input(request.message, request.user_id, given),
            request_id=request.request_id, session_id=session, user_id=request.user_id,
        )  # fmt: skip
        latency_ms = int((time.perf_counter() - began) * 1000)
        return convert.chat_response(run_id, session, view, latency_ms)

    async def StartRun(  # noqa: N802 - gRPC method name
        self, request: pb.StartRunRequest, context: _Context
    ) -> pb.StartRunResponse:
        """Queue a run and return at once."""
        tenant = tenancy.authorize_name(request.parent, "parent")
        if not request.workflow:
            raise errors.InvalidArgument("workflow is required", field="workflow")
        if not request.request_id:
            raise errors.InvalidArgument("request_id is required", field="request_id")
        run_id, _ = await self._runs.run(
            tenant, request.workflow, request.workflow_version, _dict(request, "input"),
            request_id=request.request_id, session_id=request.session_id,
            user_id=request.user_id, wait=False,
        )  # fmt: skip
        row, view = await self._runs.get(tenant, run_id)
        return pb.StartRunResponse(run=convert.run(row, view, tenant))

    async def GetRun(  # noqa: N802 - gRPC method name
        self, request: pb.GetRunRequest, context: _Context
    ) -> pb.GetRunResponse:
        """One run with its steps."""
        tenant = tenancy.authorize_name(request.name)
        row, view = await self._runs.get(tenant, request.name.rpartition("/")[2])
        return pb.GetRunResponse(run=convert.run(row, view, tenant))

    async def ListRuns(  # noqa: N802 - gRPC method name
        self, request: pb.ListRunsRequest, context: _Context
    ) -> pb.ListRunsResponse:
        """A page of the tenant's runs, newest first."""
        tenant = tenancy.authorize_name(request.parent, "parent")
        size = min(1000, request.page_size or 50)
        status = (
            "" if not request.status else pb.RunStatus.Name(request.status)[len("RUN_STATUS_") :]
        )
        rows = await store.page(
            self._runs.engine, tenant, size=size + 1, before=_cursor(request.page_token),
            status=status, workflow=request.workflow, session_id=request.session_id,
        )  # fmt: skip
        response = pb.ListRunsResponse(
            runs=[convert.run(row, None, tenant, steps=False) for row in rows[:size]]
        )
        if len(rows) > size:
            last = rows[size - 1]
            raw = f"{last.created_at.isoformat()}|{last.run_id}"
            response.next_page_token = base64.urlsafe_b64encode(raw.encode()).decode()
        return response

    async def CancelRun(  # noqa: N802 - gRPC method name
        self, request: pb.CancelRunRequest, context: _Context
    ) -> pb.CancelRunResponse:
        """Stop a run and compensate what it committed."""
        tenant = tenancy.authorize_name(request.name)
        run_id = request.name.rpartition("/")[2]
        await self._runs.cancel(tenant, run_id, request.reason or "cancelled on request")
        row, view = await self._runs.get(tenant, run_id)
        return pb.CancelRunResponse(run=convert.run(row, view, tenant))

    async def ResumeRun(  # noqa: N802 - gRPC method name
        self, request: pb.ResumeRunRequest, context: _Context
    ) -> pb.ResumeRunResponse:
        """Give a waiting run the human's input."""
        tenant = tenancy.authorize_name(request.name)
        if not request.step_id:
            raise errors.InvalidArgument("step_id is required", field="step_id")
        run_id = request.name.rpartition("/")[2]
        await self._runs.resume(tenant, run_id, request.step_id, _dict(request, "input"))
        row, view = await self._runs.get(tenant, run_id)
        return pb.ResumeRunResponse(run=convert.run(row, view, tenant))

    async def StreamRun(  # noqa: N802 - gRPC method name
        self, request: pb.StreamRunRequest, context: _Context
    ) -> AsyncIterator[message_pb2.StreamEvent]:
        """Answer a message as a stream of events; see :mod:`services.orchestrator.streaming`."""
        tenant = tenancy.check_claimed_tenant(request.tenant_id)
        _check_message(request.message)
        for field in ("session_id", "request_id"):
            if not getattr(request, field):
                raise errors.InvalidArgument(f"{field} is required", field=field)
        given = _dict(request, "context")
        events = streaming.stream_run(
            self._runs, tenant, intent.classify(request.message, given),
            intent.workflow_input(request.message, request.user_id, given),
            request_id=request.request_id, session_id=request.session_id,
            user_id=request.user_id,
        )  # fmt: skip
        async for event in events:
            yield event
