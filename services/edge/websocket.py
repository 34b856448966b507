"""The WebSocket chat bridge: each ``/ws/chat`` connection becomes one RealtimeService.Chat.

Envoy upgrades the connection and hands it here (the gRPC-JSON transcoder does not speak
WebSocket). The upgrade request is admitted by the same :class:`Gate` as every other call,
as a call of ``RealtimeService/Chat`` (scope ``chat:write``, rate limits, quotas), from the
``authorization`` or ``x-api-key`` header or, since browsers cannot set headers on a
WebSocket, an ``access_token`` query parameter (a JWT or an API key). A refused upgrade is
an HTTP 401/403/429 with the JSON error body every other endpoint uses.

Frames are JSON text in protobuf's JSON mapping: the client sends ``ChatRequest`` frames
(``{"open": {...}}`` first, then ``{"userMessage": {"text": "..."}}`` and
``{"ack": {"sequence": "12"}}``); the server sends ``StreamEvent`` frames (camelCase,
int64 as strings). A failure is sent as a last ``{"error": {...}}`` event, then the
connection closes with a code the client can act on:

====  =====================================================================
1000  the session ended normally
1001  the edge is shutting down
1003  a binary frame (only JSON text is spoken)
1007  a frame that is not JSON or not a ChatRequest
1009  a frame larger than the limit
1011  an internal error
1013  the realtime service is unavailable: retry later
44xx  the gRPC status as an HTTP code: 4400 bad request, 4401, 4403, 4404,
      4408 idle timeout, 4429 too many connections for the tenant
====  =====================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Any

import grpc
from aiohttp import WSCloseCode, WSMsgType, web
from google.protobuf import json_format
from prometheus_client import CollectorRegistry, Counter, Gauge

from services.edge.authz import Gate, gate_unavailable, trusted_headers
from services.kit import context, errors
from supportmesh.common.v1 import errors_pb2
from supportmesh.realtime.v1 import realtime_service_pb2 as realtime_pb
from supportmesh.realtime.v1 import realtime_service_pb2_grpc as realtime_grpc
from supportmesh.spec.v1 import message_pb2

_log = logging.getLogger("supportmesh.edge.websocket")
CHAT_METHOD = "/supportmesh.realtime.v1.RealtimeService/Chat"
_HTTP_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: 4400, grpc.StatusCode.FAILED_PRECONDITION: 4400,
    grpc.StatusCode.OUT_OF_RANGE: 4400, grpc.StatusCode.UNAUTHENTICATED: 4401,
    grpc.StatusCode.PERMISSION_DENIED: 4403, grpc.StatusCode.NOT_FOUND: 4404,
    grpc.StatusCode.DEADLINE_EXCEEDED: 4408, grpc.StatusCode.RESOURCE_EXHAUSTED: 4429,
    grpc.StatusCode.UNAVAILABLE: WSCloseCode.TRY_AGAIN_LATER,
}  # fmt: skip


def close_code(code: grpc.StatusCode) -> int:
    """The WebSocket close code for a Chat stream that ended with ``code``."""
    if code is grpc.StatusCode.OK:
        return WSCloseCode.OK
    return int(_HTTP_CODES.get(code, WSCloseCode.INTERNAL_ERROR))


def frame(event: message_pb2.StreamEvent) -> str:
    """A StreamEvent as a compact JSON text frame."""
    return json.dumps(json_format.MessageToDict(event), separators=(",", ":"))


def refusal(error: errors.DomainError) -> web.Response:
    """The HTTP answer to an upgrade the gate refused."""
    details: list[dict[str, Any]] = [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": errors.reason_name(
            error.reason), "domain": "supportmesh.io", "metadata": error.metadata}
    ]  # fmt: skip
    body = {"code": error.code.value[0], "message": error.message, "details": details}
    headers = {}
    if error.retry_after_s is not None:
        headers["retry-after"] = str(max(1, round(error.retry_after_s)))
    return web.json_response(body, status=error.http_status, headers=headers)


class _Closed(Exception):
    """The bridge decided to close the connection with ``code``."""

    def __init__(self, code: int, error: errors_pb2.ErrorSpec | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.error = error


class ChatBridge:
    """Serves ``/ws/chat`` by bridging frames to RealtimeService.Chat."""

    def __init__(
        self,
        gate: Gate,
        realtime: realtime_grpc.RealtimeServiceStub,
        registry: CollectorRegistry,
        *,
        max_frame_bytes: int = 64 * 1024,
        session_s: float = 3600.0,
    ) -> None:
        """Admit with ``gate``; open Chat streams on ``realtime``."""
        self._gate = gate
        self._realtime = realtime
        self._max_frame_bytes = max_frame_bytes
        self._session_s = session_s
        self._open = Gauge(
            "edge_websocket_connections", "Open WebSocket chat connections.", registry=registry
        )
        self._closes = Counter(
            "edge_websocket_closes", "Closed WebSocket chat connections by close code.",
            ("code",), registry=registry,
        )  # fmt: skip
        self._sockets: set[web.WebSocketResponse] = set()

    def install(self, app: web.Application) -> None:
        """Serve ``/ws/chat`` from ``app``, closing its connections when ``app`` shuts down."""
        app.router.add_get("/ws/chat", self.handle)
        app.on_shutdown.append(self._shutdown)

    async def _shutdown(self, _: web.Application) -> None:
        # All at once: each close may wait for its client's answer.
        await asyncio.gather(
            *(
                socket.close(code=WSCloseCode.GOING_AWAY, message=b"the edge is shutting down")
                for socket in list(self._sockets)
            ),
            return_exceptions=True,
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Admit the upgrade, then bridge until either side ends."""
        headers = {key.lower(): value for key, value in request.headers.items()}
        token = request.query.get("access_token", "")
        if token and "authorization" not in headers and "x-api-key" not in headers:
            headers["authorization"] = f"Bearer {token}"
        try:
            principal = await self._gate.check(CHAT_METHOD, headers)
        except errors.DomainError as exc:
            return refusal(exc)
        except Exception:  # noqa: BLE001 - fail closed, as ext_authz does (503)
            _log.warning("admitting a WebSocket failed", exc_info=True)
            return refusal(gate_unavailable())
        socket = web.WebSocketResponse(max_msg_size=self._max_frame_bytes, autoping=True)
        await socket.prepare(request)
        to_set = trusted_headers(principal)
        request_id = headers.get(context.REQUEST_ID_KEY) or uuid.uuid4().hex
        metadata = [*to_set.items(), (context.REQUEST_ID_KEY, request_id)]
        # The stubs type only the sync form; aio's Chat() opens a stream written with write().
        chat: Any = self._realtime.Chat
        call: Any = chat(metadata=metadata, timeout=self._session_s)
        self._sockets.add(socket)
        self._open.inc()
        code = int(WSCloseCode.OK)
        try:
            code = await self._bridge(socket, call)
        finally:
            call.cancel()
            self._sockets.discard(socket)
            self._open.dec()
            self._closes.labels(str(socket.close_code or code)).inc()
        return socket

    async def _bridge(self, socket: web.WebSocketResponse, call: Any) -> int:
        upstream = asyncio.create_task(self._upstream(socket, call))
        downstream = asyncio.create_task(self._downstream(socket, call))
        try:
            done, _ = await asyncio.wait(
                {upstream, downstream}, return_when=asyncio.FIRST_COMPLETED
            )
            finished = done.pop()
            failure = finished.exception()
            if isinstance(failure, _Closed):
                await self._close(socket, failure)
                return failure.code
            if failure is not None:
                raise failure
            if finished is downstream:
                await socket.close(code=WSCloseCode.OK)
            return WSCloseCode.OK
        finally:
            for task in (upstream, downstream):
                task.cancel()
            await asyncio.gather(upstream, downstream, return_exceptions=True)

    async def _close(self, socket: web.WebSocketResponse, closed: _Closed) -> None:
        if socket.closed:
            return
        if closed.error is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                event = message_pb2.StreamEvent(error=closed.error)
                await socket.send_str(frame(event))
        reason = closed.error.message.encode()[:120] if closed.error else b""
        await socket.close(code=closed.code, message=reason)

    async def _upstream(self, socket: web.WebSocketResponse, call: Any) -> None:
        """Client frames to the Chat stream; returns when the client goes away."""
        async for message in socket:
            if message.type == WSMsgType.TEXT:
                try:
                    request = json_format.Parse(message.data, realtime_pb.ChatRequest())
                except json_format.ParseError as exc:
                    raise _Closed(
                        WSCloseCode.INVALID_TEXT,
                        errors.InvalidArgument(f"the frame is not a ChatRequest: {exc}").to_spec(),
                    ) from None
                await call.write(request)
            elif message.type == WSMsgType.BINARY:
                raise _Closed(
                    WSCloseCode.UNSUPPORTED_DATA,
                    errors.InvalidArgument("frames must be JSON text, not binary").to_spec(),
                )
        # aiohttp has closed the socket already when a frame was too large (1009).

    async def _downstream(self, socket: web.WebSocketResponse, call: Any) -> None:
        """Chat events to the client; raises _Closed with the stream's failure."""
        try:
            async for event in call:
                await socket.send_str(frame(event))
        except grpc.aio.AioRpcError as exc:
            remote = errors.parse_rpc_error(exc)
            spec = errors_pb2.ErrorSpec(
                code=remote.code.value[0], reason=errors.reason_value(remote.reason),
                message=remote.message or remote.code.name, metadata=dict(remote.metadata),
            )  # fmt: skip
            raise _Closed(close_code(remote.code), spec) from None
