"""RealtimeService: the bidirectional ``Chat`` stream and the server-streaming ``StreamChat``."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import json_format

from services.kit import context as call_context
from services.kit import errors, tenancy
from services.realtime.connection import Connection, Realtime, heartbeat_for, terminal_after
from services.realtime.sessions import Pending
from supportmesh.common.v1 import errors_pb2
from supportmesh.realtime.v1 import realtime_service_pb2 as pb
from supportmesh.realtime.v1 import realtime_service_pb2_grpc as pb_grpc
from supportmesh.spec.v1 import message_pb2

_Context = grpc.aio.ServicerContext[Any, Any]
MAX_REQUEST_ID = 128


class RealtimeServicer(pb_grpc.RealtimeServiceServicer):
    """Live chat sessions over the shared session state."""

    def __init__(self, realtime: Realtime) -> None:
        """Serve sessions with ``realtime``'s parts."""
        self.rt = realtime

    async def _submit(
        self, conn: Connection, user_id: str, text: str, request_id: str, extra: dict[str, Any]
    ) -> tuple[int, int]:
        limit = self.rt.limits.max_message_chars
        if not text.strip():
            raise errors.InvalidArgument("the message text must not be empty", field="text")
        if len(text) > limit:
            raise errors.InvalidArgument(
                f"the message is longer than {limit} characters",
                reason=errors_pb2.ERROR_REASON_PAYLOAD_TOO_LARGE,
                field="text",
                metadata={"limit": str(limit)},
            )
        if len(request_id) > MAX_REQUEST_ID:
            raise errors.InvalidArgument("request_id is too long", field="request_id")
        item = Pending(request_id or uuid.uuid4().hex, text, user_id, extra)
        found = await self.rt.sessions.submit(*conn.key, item)
        self.rt.answers.ensure(conn.key)
        return found

    def _connection(
        self, context: _Context, tenant_id: str, session_id: str, rpc: str
    ) -> Connection:
        """A connection limited by the tenant plan's limit the edge vouched for, or the default."""
        metadata = dict(context.invocation_metadata() or ())
        plan = str(metadata.get(call_context.MAX_CONNECTIONS_KEY, ""))
        limit = int(plan) if plan.isdigit() and int(plan) > 0 else None
        return Connection(
            self.rt, tenant_id, session_id, rpc,
            limit or self.rt.limits.max_connections_per_tenant,
        )  # fmt: skip

    async def _send(self, context: _Context, event: message_pb2.StreamEvent) -> None:
        try:
            await context.write(event)
        except Exception as exc:
            # The client went away mid-write: the call is over, which is no server error.
            self.rt.metrics.send_errors.inc()
            raise asyncio.CancelledError from exc

    # Events are written with context.write (flow-controlled), not yielded: the stubs only
    # know the generator form.
    async def Chat(  # type: ignore[override]  # noqa: N802 - gRPC method name
        self, request_iterator: AsyncIterator[pb.ChatRequest], context: _Context
    ) -> None:
        """One live session: frames in, events out, until the client closes or idles out."""
        tenant = tenancy.require_tenant()
        frames = aiter(request_iterator)
        try:
            async with asyncio.timeout(self.rt.limits.heartbeat_s):
                first = await anext(frames)
        except StopAsyncIteration:
            raise errors.InvalidArgument("the stream ended before its open frame") from None
        except TimeoutError:
            raise errors.DeadlineExceeded(
                "no open frame arrived", reason=errors_pb2.ERROR_REASON_TIMEOUT
            ) from None
        if first.WhichOneof("frame") != "open":
            raise errors.InvalidArgument("the first frame must be open", field="open")
        opening = first.open
        tenancy.check_claimed_tenant(opening.tenant_id, "open.tenant_id")
        user = opening.user_id or tenancy.caller().subject
        if not user:
            raise errors.InvalidArgument("open.user_id is required", field="open.user_id")
        session = await self.rt.sessions.open(tenant, user, opening.session_id)
        conn = self._connection(context, tenant, session, "Chat")
        await self._serve(
            conn, context, opening.last_seen_sequence, self._chat(conn, frames, user, context)
        )

    async def _chat(
        self,
        conn: Connection,
        frames: AsyncIterator[pb.ChatRequest],
        user: str,
        context: _Context,
    ) -> None:
        async def send(event: message_pb2.StreamEvent) -> None:
            await self._send(context, event)

        await send(heartbeat_for(conn.key[1]))  # tells a new session its id at once
        if await self.rt.sessions.waiting(*conn.key):
            self.rt.answers.ensure(conn.key)
        writer = asyncio.create_task(conn.write(send, lambda _: False))
        reader = asyncio.create_task(self._read(conn, frames, user))
        try:
            finished, _ = await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_COMPLETED)
            if reader in finished:
                reader.result()  # a protocol error ends the stream with its status
                # The client closed its side: deliver the answers it is owed, then end.
                while not writer.done() and not await conn.drained():
                    await asyncio.wait({writer}, timeout=0.05)
            if writer.done():
                writer.result()
        finally:
            for task in (writer, reader):
                task.cancel()
            await asyncio.gather(writer, reader, return_exceptions=True)

    async def _read(
        self, conn: Connection, frames: AsyncIterator[pb.ChatRequest], user: str
    ) -> None:
        async for frame in frames:
            conn.last_activity = time.monotonic()
            which = frame.WhichOneof("frame")
            if which == "user_message":
                message = frame.user_message
                extra = (
                    json_format.MessageToDict(message.metadata)
                    if message.HasField("metadata")
                    else {}
                )
                await self._submit(conn, user, message.text, message.request_id, extra)
            elif which == "ack":
                conn.ack(frame.ack.sequence)
            elif which == "open":
                raise errors.InvalidArgument("the session is already open", field="open")
            else:
                raise errors.InvalidArgument("a frame must hold open, user_message or ack")

    async def _serve(self, conn: Connection, context: _Context, after: int, body: Any) -> None:
        """Admit ``conn``, feed it from ``after`` while ``body`` runs, then clean up."""
        metrics = self.rt.metrics
        try:
            await conn.admit()
        except BaseException:
            body.close()
            raise
        metrics.active.labels(conn.rpc).inc()
        began = time.monotonic()
        feed = asyncio.create_task(conn.feed(after))
        try:
            await body
        finally:
            feed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feed
            metrics.active.labels(conn.rpc).dec()
            metrics.durations.labels(conn.rpc).observe(time.monotonic() - began)
            with contextlib.suppress(Exception):
                await conn.release()

    async def StreamChat(  # type: ignore[override]  # noqa: N802 - gRPC method name
        self, request: pb.StreamChatRequest, context: _Context
    ) -> None:
        """Send one message (or resume) and stream until its answer's final event."""
        tenant = tenancy.check_claimed_tenant(request.tenant_id)
        if not request.user_id:
            raise errors.InvalidArgument("user_id is required", field="user_id")
        if not request.message and not request.session_id:
            raise errors.InvalidArgument(
                "a message, or a session_id to resume, is required", field="message"
            )
        session = await self.rt.sessions.open(tenant, request.user_id, request.session_id)
        conn = self._connection(context, tenant, session, "StreamChat")
        await self._serve(
            conn, context, request.last_seen_sequence, self._stream(conn, request, context)
        )

    async def _stream(
        self, conn: Connection, request: pb.StreamChatRequest, context: _Context
    ) -> None:
        async def send(event: message_pb2.StreamEvent) -> None:
            await self._send(context, event)

        await send(heartbeat_for(conn.key[1]))
        position = 0
        if request.message:
            extra = (
                json_format.MessageToDict(request.context) if request.HasField("context") else {}
            )
            position, at = await self._submit(
                conn, request.user_id, request.message, request.request_id, extra
            )
        if position:
            done = terminal_after(at, position)
        elif await self.rt.sessions.waiting(*conn.key):
            self.rt.answers.ensure(conn.key)
            done = terminal_after(await self.rt.sessions.last_sequence(*conn.key), 1)
        else:
            # Nothing is being answered: replay what the client missed and end.
            last = await self.rt.sessions.last_sequence(*conn.key)
            if last <= request.last_seen_sequence:
                return

            def done(event: message_pb2.StreamEvent) -> bool:
                return event.sequence >= last

        await conn.write(send, done)
