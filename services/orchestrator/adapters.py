"""The real ports behind the workflow engine: router, tools with outbox events, knowledge.

Every port call starts at a safe point (:func:`~services.orchestrator.stream.halt_point`):
a cancelled run stops there, before the call, never in the middle of one.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf import struct_pb2, timestamp_pb2
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import context, db, events
from services.orchestrator import outbox
from services.orchestrator.models import tier_of
from services.orchestrator.stream import RunHub, halt_point, tool_event
from services.orchestrator.tools import ToolRegistry
from services.orchestrator.workflow import (
    CallContext,
    HumanRequest,
    Passage,
    RouteDecision,
    ToolEvent,
)
from supportmesh.common.v1 import errors_pb2
from supportmesh.events.v1 import events_pb2
from supportmesh.router.v1 import router_service_pb2 as router_pb
from supportmesh.router.v1 import router_service_pb2_grpc as router_grpc
from supportmesh.spec.v1 import tier_pb2

_log = logging.getLogger("supportmesh.orchestrator")
_SUBJECTS = {
    "requested": events.TOOL_CALL_REQUESTED,
    "succeeded": events.TOOL_CALL_SUCCEEDED,
    "compensated": events.TOOL_CALL_SUCCEEDED,
    "failed": events.TOOL_CALL_FAILED,
}
_PREFERENCES = {"fast": tier_pb2.FAST, "balanced": tier_pb2.BALANCED, "accurate": tier_pb2.ACCURATE}


class RouterClient:
    """RouterPort over RouterService.Decide; the router down means the cheapest tier first."""

    def __init__(self, channel: grpc.aio.Channel | None) -> None:
        """Decide over ``channel`` (None: no router, always the default path)."""
        self._stub = router_grpc.RouterServiceStub(channel) if channel is not None else None

    async def decide(
        self, call: CallContext, query: str, context_: Mapping[str, Any], preference: str
    ) -> RouteDecision:
        """The router's tier and escalation path for ``query``."""
        halt_point()
        intent = str(context_.get("intent", ""))
        fallback = RouteDecision("SLM_A", ("SLM_B", "LLM"), 0.5, intent)
        if self._stub is None:
            return fallback
        request = router_pb.DecideRequest(
            query=query or call.workflow,
            tenant_id=call.tenant_id,
            user_id=call.user_id,
            tier_preference=_PREFERENCES.get(preference, tier_pb2.BALANCED),
        )
        try:
            reply = await self._stub.Decide(
                request,
                timeout=max(0.05, min(1.0, call.timeout_s())),
                metadata=((context.TENANT_KEY, call.tenant_id),),
            )
        except grpc.RpcError:
            _log.warning("router unavailable; default tier path", exc_info=True)
            return fallback
        path = tuple(tier_of(tier_pb2.Tier.Name(t)) for t in reply.escalation_path)
        return RouteDecision(
            tier_of(tier_pb2.Tier.Name(reply.tier)), path, reply.confidence, intent,
            reply.decision_id,
        )  # fmt: skip


def _payload(value: Mapping[str, Any] | None) -> struct_pb2.Struct:
    payload = struct_pb2.Struct()
    if value:
        payload.update({str(k): v for k, v in value.items() if _plain(v)})
    return payload


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool | list | dict)


class RegistryTools:
    """ToolPort over the registry; every phase is a ``tool.call.*`` event through the outbox.

    Each phase is also published to the run's live stream (``hub``), with a customer-safe
    summary instead of the call's arguments and output.
    """

    def __init__(
        self,
        registry: ToolRegistry,
        engine: AsyncEngine,
        wake: Callable[[], None],
        hub: RunHub | None = None,
    ) -> None:
        """Call ``registry``'s tools; queue events in ``engine``'s outbox and ``wake`` the relay."""
        self._registry, self._engine, self._wake, self._hub = registry, engine, wake, hub
        # requested events of read-only calls under way, by (run, key, attempt)
        self._announced: dict[tuple[str, str, int], tuple[str, Message, str]] = {}

    async def call(
        self, call: CallContext, tool: str, arguments: Mapping[str, Any], idempotency_key: str
    ) -> Mapping[str, Any]:
        """Run ``tool`` for the call's tenant under its idempotency key."""
        halt_point()
        return await self._registry.call(tool, call.tenant_id, dict(arguments), idempotency_key)

    async def record(self, call: CallContext, event: ToolEvent) -> None:
        """Write the event; its id is derived from key, phase and attempt, so replays dedupe.

        The ``requested`` event of a read-only call (not ``write_ahead``) is published live
        at once but stored with the call's outcome, in one transaction: a crash in between
        loses neither, since recovery repeats the read and both events with it.
        """
        attempt = (call.run_id, event.idempotency_key, event.attempt)
        if event.phase == "requested":
            # A halted run stops before the write-ahead event: no call is announced that
            # will not be made.
            halt_point()
            if not event.write_ahead:
                self._announced[attempt] = self._message(call, event)
                self._publish(call, event)
                return
        earlier = self._announced.pop(attempt, None)
        items = [] if earlier is None else [earlier]
        items.append(self._message(call, event))
        async with db.global_transaction(self._engine) as connection:
            await outbox.add_many(connection, items)
        self._wake()
        self._publish(call, event)

    def _publish(self, call: CallContext, event: ToolEvent) -> None:
        if self._hub is not None:
            self._hub.publish(call.run_id, tool_event(event))

    @staticmethod
    def _message(call: CallContext, event: ToolEvent) -> tuple[str, Message, str]:
        """The outbox item of ``event``: subject, ToolCallEvent and event id."""
        occurred = timestamp_pb2.Timestamp()
        occurred.GetCurrentTime()
        message = events_pb2.ToolCallEvent(
            tenant_id=call.tenant_id,
            run_id=call.run_id,
            step_id=event.step_id,
            tool=event.tool,
            idempotency_key=event.idempotency_key,
            attempt=event.attempt,
            payload=_payload(event.output if event.output is not None else event.arguments),
            compensation=bool(event.compensates),
            occur_time=occurred,
        )
        if event.error:
            message.error.CopyFrom(errors_pb2.ErrorSpec(message=event.error[:500], code=13))
        raw = f"{event.idempotency_key}|{event.phase}|{event.attempt}"
        event_id = hashlib.sha256(raw.encode()).hexdigest()[:32]
        return _SUBJECTS[event.phase], message, event_id


class ToolKnowledge:
    """KnowledgePort over the ``knowledge.search`` tool; no knowledge service means no passages."""

    def __init__(self, registry: ToolRegistry) -> None:
        """Search through ``registry``."""
        self._registry = registry

    async def search(
        self, call: CallContext, query: str, top_k: int, min_score: float
    ) -> Sequence[Passage]:
        """The tenant's best passages for ``query``."""
        halt_point()
        found = await self._registry.call(
            "knowledge.search",
            call.tenant_id,
            {"query": query, "top_k": max(1, top_k), "min_score": min_score},
        )
        return [
            Passage(
                id=str(p["chunk_id"]), text=str(p["text"]), score=float(p["score"]),
                document_id=str(p["document_id"]), title=str(p.get("title", "")),
                uri=str(p.get("uri", "")),
            )
            for p in found["passages"]
        ]  # fmt: skip


class HumanQueue:
    """HumanPort: the hand-off is the run's WAITING_FOR_HUMAN status and its event."""

    async def hand_off(self, call: CallContext, request: HumanRequest, idempotency_key: str) -> str:
        """A ticket id derived from the key, so a replayed hand-off is the same ticket."""
        halt_point()
        _log.info("run handed to a human", extra={"run_id": call.run_id, "queue": request.queue})
        return "ticket-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:16]
