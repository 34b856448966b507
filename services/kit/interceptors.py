"""Server and client interceptors: request id, deadlines, tracing, metrics, logs, errors.

One server interceptor does all per-call work so each RPC is wrapped once, not four times:
it binds the call context, refuses calls without a deadline, opens a span continuing the
caller's trace, maps domain errors to ``google.rpc.Status`` (unknown errors to a bare
INTERNAL), and records the metric and access log line with the final status code.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from services.kit import context, errors
from services.kit.telemetry import Telemetry, split_method
from supportmesh.common.v1 import errors_pb2

_log = logging.getLogger("supportmesh.rpc")
# grpc.aio reports a call without deadline as having an effectively infinite time remaining.
_NO_DEADLINE_S = 1e8
# Infrastructure methods that clients (probes, grpcurl) call without deadlines.
EXEMPT_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
_PROPAGATED = (context.TENANT_KEY, context.SUBJECT_KEY, context.SCOPES_KEY)

Handler = Callable[..., Any]


class _Call:
    """Book-keeping for one inbound call between its start and its end."""

    def __init__(self, method: str, servicer_context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self.method = method
        self.grpc_context = servicer_context
        self.started = time.perf_counter()
        metadata = dict(servicer_context.invocation_metadata() or ())
        self.metadata: dict[str, str] = {
            key: value for key, value in metadata.items() if isinstance(value, str)
        }
        remaining = servicer_context.time_remaining()
        deadline = None
        if remaining is not None and remaining < _NO_DEADLINE_S:
            deadline = time.monotonic() + remaining
        self.call = context.CallContext(
            request_id=self.metadata.get(context.REQUEST_ID_KEY) or uuid.uuid4().hex,
            method=method,
            deadline=deadline,
            tenant_id=self.metadata.get(context.TENANT_KEY, ""),
            subject=self.metadata.get(context.SUBJECT_KEY, ""),
            scopes=frozenset(self.metadata.get(context.SCOPES_KEY, "").split()),
            platform_admin=self.metadata.get(context.PLATFORM_ADMIN_KEY) == "1",
        )
        self.code = grpc.StatusCode.OK


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """The kit's one server interceptor; see the module docstring for what it does."""

    def __init__(self, telemetry: Telemetry, *, require_deadline: bool = True) -> None:
        """Record into ``telemetry``; refuse deadline-less calls when ``require_deadline``."""
        self._telemetry = telemetry
        self._require_deadline = require_deadline

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Wrap the method handler so every call goes through :meth:`_enter`/:meth:`_exit`."""
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(EXEMPT_PREFIXES):
            return handler
        codec = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary), **codec
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(method, handler.stream_unary), **codec
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(method, handler.unary_stream), **codec
            )
        if handler.stream_stream is None:
            return handler
        return grpc.stream_stream_rpc_method_handler(
            self._streaming(method, handler.stream_stream), **codec
        )

    def _unary(self, method: str, behaviour: Handler) -> Handler:
        async def wrapped(
            request: Any, servicer_context: grpc.aio.ServicerContext[Any, Any]
        ) -> Any:
            call, tokens = self._enter(method, servicer_context)
            try:
                self._check_deadline(call)
                return await behaviour(request, servicer_context)
            except BaseException as exc:
                await self._fail(call, exc)
                raise
            finally:
                self._exit(call, tokens)

        return wrapped

    def _streaming(self, method: str, behaviour: Handler) -> Handler:
        async def wrapped(
            request: Any, servicer_context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            call, tokens = self._enter(method, servicer_context)
            try:
                self._check_deadline(call)
                result = behaviour(request, servicer_context)
                if inspect.isasyncgen(result):
                    async for item in result:
                        yield item
                else:
                    await result
            except BaseException as exc:
                await self._fail(call, exc)
                raise
            finally:
                self._exit(call, tokens)

        return wrapped

    def _enter(
        self, method: str, servicer_context: grpc.aio.ServicerContext[Any, Any]
    ) -> tuple[_Call, tuple[Any, ...]]:
        call = _Call(method, servicer_context)
        parent = propagate.extract(call.metadata)
        span = self._telemetry.tracer.start_span(
            method.lstrip("/"),
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes={
                "rpc.system": "grpc",
                "rpc.method": method,
                "request_id": call.call.request_id,
                "tenant_id": call.call.tenant_id,
            },
        )
        otel_token = otel_context.attach(trace.set_span_in_context(span, parent))
        call_token = context.bind(call.call)
        return call, (span, otel_token, call_token)

    def _check_deadline(self, call: _Call) -> None:
        if self._require_deadline and call.call.deadline is None:
            raise errors.InvalidArgument(
                "calls to this service must carry a deadline",
                reason=errors_pb2.ERROR_REASON_DEADLINE_REQUIRED,
            )

    async def _fail(self, call: _Call, exc: BaseException) -> None:
        if isinstance(exc, errors.DomainError):
            call.code = exc.code
            await call.grpc_context.abort_with_status(exc.to_status())
        if isinstance(exc, asyncio.CancelledError):
            call.code = grpc.StatusCode.CANCELLED
            return
        aborted_code = call.grpc_context.code()
        if aborted_code not in (None, grpc.StatusCode.OK):
            # The servicer aborted on purpose (context.abort); keep its status.
            call.code = aborted_code
            return
        call.code = grpc.StatusCode.INTERNAL
        _log.error("unhandled error in %s", call.method, exc_info=exc)
        await call.grpc_context.abort_with_status(
            errors.Internal(f"internal error (request id {call.call.request_id})").to_status()
        )

    def _exit(self, call: _Call, tokens: tuple[Any, ...]) -> None:
        span, otel_token, call_token = tokens
        elapsed = time.perf_counter() - call.started
        service, name = split_method(call.method)
        labels = (service, name, call.code.name)
        self._telemetry.handled.labels(*labels).inc()
        self._telemetry.latency.labels(*labels).observe(elapsed)
        span.set_attribute("rpc.grpc.status_code", call.code.value[0])
        if call.code is not grpc.StatusCode.OK:
            span.set_status(trace.Status(trace.StatusCode.ERROR, call.code.name))
        span.end()
        # Successful calls are counted and traced already; a log line each would cost more
        # than some handlers (ext_authz Check) do. Failures are always logged.
        level = logging.DEBUG if call.code is grpc.StatusCode.OK else logging.INFO
        if _log.isEnabledFor(level):
            _log.log(
                level,
                "rpc",
                extra={
                    "method": call.method,
                    "code": call.code.name,
                    "ms": round(elapsed * 1e3, 3),
                },
            )
        context.reset(call_token)
        otel_context.detach(otel_token)


def outbound_metadata(existing: Iterable[tuple[str, str | bytes]] | None) -> grpc.aio.Metadata:
    """Metadata for an outbound call: the caller's own plus request id, tenant and trace."""
    metadata = grpc.aio.Metadata(*(existing or ()))
    present = {key for key, _ in metadata}
    call = context.current()
    if call is not None:
        inherited = (
            (context.REQUEST_ID_KEY, call.request_id),
            (context.TENANT_KEY, call.tenant_id),
            (context.SUBJECT_KEY, call.subject),
            (context.SCOPES_KEY, " ".join(sorted(call.scopes))),
            (context.PLATFORM_ADMIN_KEY, "1" if call.platform_admin else ""),
        )
        for key, value in inherited:
            if value and key not in present:
                metadata.add(key, value)
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    for key, value in carrier.items():
        metadata.add(key, value)
    return metadata


def outbound_timeout(requested: float | None, default: float | None = None) -> float | None:
    """An outbound call's timeout: ``requested`` or ``default``, capped by the inbound call's."""
    if requested is None:
        requested = default
    call = context.current()
    remaining = call.time_remaining() if call is not None else None
    if remaining is None:
        return requested
    return remaining if requested is None else min(requested, remaining)


class ClientInterceptor:
    """Propagates request id, tenant, trace and deadline; records a client span and metric.

    A call without a timeout gets ``default_timeout_s`` here rather than from the service
    config's ``timeout``: grpcio (1.85; grpc/grpc#34547, #40633) neither sends that one to the
    server, which then sees no deadline, nor keeps it: the call fails early, by a varying amount.

    grpc.aio files an interceptor under the first call kind it implements only, so one
    object cannot intercept all four kinds: :func:`client_interceptors` gives one per kind,
    all sharing this logic.
    """

    def __init__(self, telemetry: Telemetry, default_timeout_s: float | None = None) -> None:
        """Record into ``telemetry``; give calls without a timeout ``default_timeout_s``."""
        self._telemetry = telemetry
        self._default_timeout_s = default_timeout_s
        self._pending: set[asyncio.Future[None]] = set()

    async def _intercept(self, continuation: Handler, details: Any, request: Any) -> Any:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        span = self._telemetry.tracer.start_span(
            method.lstrip("/"), kind=trace.SpanKind.CLIENT, attributes={"rpc.method": method}
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            new_details = grpc.aio.ClientCallDetails(
                method=details.method,
                timeout=outbound_timeout(details.timeout, self._default_timeout_s),
                metadata=outbound_metadata(details.metadata),
                credentials=details.credentials,
                wait_for_ready=details.wait_for_ready,
            )
            call = await continuation(new_details, request)
        finally:
            otel_context.detach(token)
        service, name = split_method(method)

        async def record(finished: Any) -> None:
            cancelled = finished.cancelled()
            code = grpc.StatusCode.CANCELLED if cancelled else await finished.code()
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code is not grpc.StatusCode.OK:
                span.set_status(trace.Status(trace.StatusCode.ERROR, code.name))
            span.end()
            self._telemetry.client_handled.labels(service, name, code.name).inc()

        def done(finished: Any) -> None:
            # aio exposes the final status only as a coroutine; the task keeps itself alive.
            task = asyncio.ensure_future(record(finished))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

        call.add_done_callback(done)
        return call


class _UnaryUnary(ClientInterceptor, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self, continuation: Handler, client_call_details: Any, request: Any
    ) -> Any:
        """Intercept a unary call."""
        return await self._intercept(continuation, client_call_details, request)


class _UnaryStream(ClientInterceptor, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self, continuation: Handler, client_call_details: Any, request: Any
    ) -> Any:
        """Intercept a server-streaming call."""
        return await self._intercept(continuation, client_call_details, request)


class _StreamUnary(ClientInterceptor, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self, continuation: Handler, client_call_details: Any, request_iterator: Any
    ) -> Any:
        """Intercept a client-streaming call."""
        return await self._intercept(continuation, client_call_details, request_iterator)


class _StreamStream(ClientInterceptor, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self, continuation: Handler, client_call_details: Any, request_iterator: Any
    ) -> Any:
        """Intercept a bidirectional call."""
        return await self._intercept(continuation, client_call_details, request_iterator)


def client_interceptors(
    telemetry: Telemetry, default_timeout_s: float | None = None
) -> list[ClientInterceptor]:
    """The kit's client interception for every call kind, for ``grpc.aio`` channels."""
    kinds = (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)
    return [kind(telemetry, default_timeout_s) for kind in kinds]
