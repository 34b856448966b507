"""Producing answers: each queued user message becomes one orchestrator StreamRun.

One instance at a time holds a session's answer lease and answers its queued messages in
order, logging every event in Valkey (which assigns the session sequence) and publishing it
to local connections. Answering is not tied to any connection: a client that disconnects
mid-answer finds the rest in the log when it resumes, on this instance or another.

If the instance producing an answer dies, its lease lapses; the next instance a client of
the session attaches to takes over and calls StreamRun again with the same request id. The
orchestrator runs a message once per request id, so this attaches to the same run (or its
recorded outcome) instead of starting another; deltas and tool events of a taken-over answer
are skipped because some were logged before the crash, and its final message is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from opentelemetry import trace

from services.kit import context, errors
from services.realtime.hub import Hub, SessionKey
from services.realtime.outbox import is_terminal, kind
from services.realtime.sessions import Pending, Sessions
from supportmesh.common.v1 import errors_pb2
from supportmesh.orchestrator.v1 import orchestrator_service_pb2 as orchestrator_pb
from supportmesh.orchestrator.v1 import orchestrator_service_pb2_grpc as orchestrator_grpc
from supportmesh.spec.v1 import message_pb2

_log = logging.getLogger("supportmesh.realtime.answers")


def error_event(error: errors.DomainError) -> message_pb2.StreamEvent:
    """A terminal error event for ``error``."""
    return message_pb2.StreamEvent(error=error.to_spec())


def rpc_error_event(exc: grpc.aio.AioRpcError) -> message_pb2.StreamEvent:
    """A terminal error event for a failed orchestrator call."""
    remote = errors.parse_rpc_error(exc)
    reason = errors.reason_value(remote.reason)
    if reason == errors_pb2.ERROR_REASON_UNSPECIFIED:
        reason = errors_pb2.ERROR_REASON_DEPENDENCY_UNAVAILABLE
    spec = errors_pb2.ErrorSpec(
        code=remote.code.value[0], reason=reason, message=remote.message or remote.code.name,
        metadata=dict(remote.metadata),
        retryable=remote.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED),
    )  # fmt: skip
    return message_pb2.StreamEvent(error=spec)


class Answers:
    """Drives the answer leases this instance holds."""

    def __init__(
        self,
        sessions: Sessions,
        hub: Hub,
        orchestrator: orchestrator_grpc.OrchestratorServiceStub,
        *,
        tracer: trace.Tracer,
        answer_timeout_s: float = 60.0,
    ) -> None:
        """Answer through ``orchestrator``, logging into ``sessions`` and publishing to ``hub``."""
        self._sessions = sessions
        self.hub = hub
        self._orchestrator = orchestrator
        self._tracer = tracer
        self._answer_timeout_s = answer_timeout_s
        self._tasks: dict[SessionKey, asyncio.Task[None]] = {}
        self._kicked: set[SessionKey] = set()

    def local(self, key: SessionKey) -> bool:
        """Whether this instance is producing the session's answers right now."""
        return key in self._tasks

    def ensure(self, key: SessionKey) -> None:
        """Make sure someone answers the session's queued messages (this instance if free)."""
        if key in self._tasks:
            # The running task may be about to give the lease up: have it look once more.
            self._kicked.add(key)
            return
        task = asyncio.create_task(self._drive(key), name=f"answers:{key[1]}")
        self._tasks[key] = task
        task.add_done_callback(lambda _: self._finished(key))

    def _finished(self, key: SessionKey) -> None:
        self._tasks.pop(key, None)
        if key in self._kicked:
            self._kicked.discard(key)
            self.ensure(key)
        else:
            # Connections waiting for this instance's next event: look in Valkey instead.
            self.hub.nudge(key)

    async def _drive(self, key: SessionKey) -> None:
        tenant_id, session_id = key
        try:
            # A kick after a read (a message queued meanwhile) has this task look again.
            self._kicked.discard(key)
            held, item, taken_over = await self._sessions.next_answer(
                tenant_id, session_id, acquire=True
            )
            if not held:
                return  # another live instance answers; connections tail the log
            stop = asyncio.Event()
            renewing = asyncio.create_task(self._renew(key, stop))
            try:
                while True:
                    if item is None:
                        if await self._sessions.release_if_idle(tenant_id, session_id):
                            return
                    else:
                        await self._answer(key, item, taken_over)
                    self._kicked.discard(key)
                    _, item, taken_over = await self._sessions.next_answer(
                        tenant_id, session_id, acquire=False
                    )
            finally:
                # A flag, not cancel(): a Valkey client may turn a cancellation into an
                # error, which the loop would survive and this await never end.
                stop.set()
                await renewing
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - Valkey trouble: the lease lapses, a resume retries
            _log.warning("answering failed", exc_info=True, extra={"session_id": session_id})

    async def _renew(self, key: SessionKey, stop: asyncio.Event) -> None:
        every_s = self._sessions.lease_ms / 3000
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every_s):
                    await stop.wait()
                return
            try:
                await self._sessions.renew(*key)
            except Exception:  # noqa: BLE001 - a missed renewal only risks a takeover
                _log.warning("lease renewal failed", exc_info=True)

    async def _emit(self, key: SessionKey, event: message_pb2.StreamEvent) -> None:
        event.session_id = key[1]
        await self._sessions.append(*key, event, terminal=is_terminal(event))
        self.hub.publish(key, event)

    async def _answer(self, key: SessionKey, item: Pending, taken_over: bool) -> None:
        """Answer ``item`` (``taken_over``: begun by an instance that died, see _relay)."""
        tenant_id, session_id = key
        request = orchestrator_pb.StreamRunRequest(
            message=item.text, tenant_id=tenant_id, user_id=item.user_id,
            session_id=session_id, request_id=item.request_id,
        )  # fmt: skip
        if item.context:
            request.context.CopyFrom(json_format.ParseDict(item.context, struct_pb2.Struct()))
        # The answer outlives the connection that asked: its own call context and deadline.
        token = context.bind(
            context.CallContext(
                request_id=item.request_id, method="realtime.answer",
                deadline=time.monotonic() + self._answer_timeout_s, tenant_id=tenant_id,
                subject=item.user_id,
            )
        )  # fmt: skip
        with self._tracer.start_as_current_span(
            "realtime.answer",
            attributes={"tenant_id": tenant_id, "session_id": session_id,
                        "request_id": item.request_id, "taken_over": taken_over},
        ) as span:  # fmt: skip
            try:
                await self._relay(key, request, taken_over, span)
            finally:
                context.reset(token)

    async def _relay(
        self,
        key: SessionKey,
        request: orchestrator_pb.StreamRunRequest,
        taken_over: bool,
        span: Any,
    ) -> None:
        try:
            call: Any = self._orchestrator.StreamRun(request, timeout=self._answer_timeout_s)
            async for event in call:
                found = kind(event)
                if found == "heartbeat" or (taken_over and not is_terminal(event)):
                    continue
                if found == "final_message":
                    span.set_attribute("run_id", event.final_message.run_id)
                await self._emit(key, event)
                if is_terminal(event):
                    return
            failure = errors.Internal(
                "the answer ended without a final message",
                reason=errors_pb2.ERROR_REASON_INTERNAL,
            )
            await self._emit(key, error_event(failure))
        except grpc.aio.AioRpcError as exc:
            await self._emit(key, rpc_error_event(exc))

    async def stop(self) -> None:
        """Stop answering here (leases lapse and another instance takes over)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
