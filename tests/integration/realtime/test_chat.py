"""Chat over native gRPC through the edge, and StreamChat as Server-Sent Events."""

from __future__ import annotations

import json
import struct
import uuid
from typing import Any

import grpc
import httpx
import pytest

from services.kit import errors
from services.kit.devstack import Platform
from supportmesh.realtime.v1 import realtime_service_pb2 as pb
from supportmesh.realtime.v1 import realtime_service_pb2_grpc as pb_grpc
from supportmesh.spec.v1 import message_pb2
from tests.integration.realtime.conftest import QUESTION, Chat, Tenant, key_metadata


async def _read_until_failure(chat: Chat) -> None:
    while True:
        event = await chat.call.read()
        assert event is not grpc.aio.EOF, "the stream ended without an error"


def _kinds(events: list[Any]) -> list[str]:
    return [event.WhichOneof("event") for event in events]


async def test_grpc_chat_streams_deltas_then_the_final_message(
    tenant: Tenant, edge_stub: pb_grpc.RealtimeServiceStub
) -> None:
    chat = Chat(edge_stub, key_metadata(tenant))
    await chat.open()
    assert chat.session_id
    await chat.say(QUESTION)
    events = await chat.until_final()
    kinds = _kinds(events)
    assert kinds[-1] == "final_message", events[-1]
    assert kinds.count("token_delta") >= 2
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert {e.session_id for e in events} == {chat.session_id}
    final = events[-1].final_message
    assert "30 days" in final.message.content
    assert final.run_id
    streamed = "".join(e.token_delta.text for e in events if e.HasField("token_delta"))
    assert streamed.split() == final.message.content.split()

    # The same session goes on: the next answer continues the sequence.
    await chat.say("And where does the refund go?")
    more = await chat.until_final()
    assert more[0].sequence == events[-1].sequence + 1
    assert _kinds(more)[-1] == "final_message"
    await chat.call.done_writing()
    assert await chat.call.read() is grpc.aio.EOF
    assert await chat.call.code() == grpc.StatusCode.OK


async def test_a_resent_message_is_answered_once(
    tenant: Tenant, edge_stub: pb_grpc.RealtimeServiceStub
) -> None:
    chat = Chat(edge_stub, key_metadata(tenant))
    await chat.open()
    request_id = uuid.uuid4().hex
    await chat.say(QUESTION, request_id)
    await chat.say(QUESTION, request_id)  # a retry after a flaky send
    await chat.say("Do I need the receipt?")
    first, second = await chat.until_final(), await chat.until_final()
    assert first[-1].final_message.run_id != second[-1].final_message.run_id
    await chat.call.done_writing()
    assert await chat.call.read() is grpc.aio.EOF  # no third answer


@pytest.mark.parametrize(
    ("frames", "code", "reason"),
    [
        ("message-first", grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED"),
        ("too-long", grpc.StatusCode.INVALID_ARGUMENT, "PAYLOAD_TOO_LARGE"),
        ("empty", grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED"),
        ("foreign-tenant", grpc.StatusCode.PERMISSION_DENIED, "TENANT_MISMATCH"),
        ("unknown-session", grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"),
    ],
)
async def test_bad_frames_end_the_stream_with_a_clear_status(
    tenant: Tenant,
    edge_stub: pb_grpc.RealtimeServiceStub,
    frames: str,
    code: grpc.StatusCode,
    reason: str,
) -> None:
    chat = Chat(edge_stub, key_metadata(tenant))
    if frames == "message-first":
        await chat.call.write(pb.ChatRequest(user_message=pb.UserMessage(text="hi")))
    elif frames == "foreign-tenant":
        await chat.call.write(pb.ChatRequest(open=pb.OpenSession(tenant_id="someone-else")))
    elif frames == "unknown-session":
        await chat.call.write(pb.ChatRequest(open=pb.OpenSession(session_id=uuid.uuid4().hex)))
    else:
        await chat.open()
        await chat.say("x" * 8001 if frames == "too-long" else "   ")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _read_until_failure(chat)
    assert caught.value.code() == code
    assert errors.parse_rpc_error(caught.value).reason == reason


async def test_chat_needs_a_credential(edge_stub: pb_grpc.RealtimeServiceStub) -> None:
    chat = Chat(edge_stub, ())
    # Refused on its headers, before any frame. Read rather than write: a write that meets
    # the refusal fails with the client library's own INTERNAL ("Failed execute_batch").
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await chat.call.read()
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def _sse(body: str) -> list[dict[str, Any]]:
    events = []
    for block in body.split("\n\n"):
        data = [line[5:].strip() for line in block.splitlines() if line.startswith("data:")]
        if data:
            events.append(json.loads("".join(data)))
    return events


async def test_stream_chat_serves_server_sent_events_and_resumes(
    platform: Platform, tenant: Tenant
) -> None:
    async with httpx.AsyncClient(
        base_url=platform.edge_url, headers={"x-api-key": tenant.key}, timeout=60
    ) as http:
        body = {"tenant_id": tenant.id, "user_id": "u1", "message": QUESTION}
        async with http.stream("POST", "/v1/chat/stream", json=body) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = _sse((await response.aread()).decode())
        assert "heartbeat" in events[0]
        session = events[0]["sessionId"]
        answer = events[1:]
        assert "finalMessage" in answer[-1]
        assert sum("tokenDelta" in e for e in answer) >= 2
        assert [int(e["sequence"]) for e in answer] == list(range(1, len(answer) + 1))
        content = answer[-1]["finalMessage"]["message"]["content"]

        # A client that saw only the first two events resumes and gets the rest, no gap.
        resume = {"tenant_id": tenant.id, "user_id": "u1", "session_id": session,
                  "last_seen_sequence": 2}  # fmt: skip
        replay = _sse((await http.post("/v1/chat/stream", json=resume)).text)[1:]
        assert [int(e["sequence"]) for e in replay] == list(range(3, len(answer) + 1))
        assert replay[-1]["finalMessage"]["message"]["content"] == content

        # Someone else's session does not exist for this user.
        stranger = {**resume, "user_id": "u2"}
        response = await http.post("/v1/chat/stream", json=stranger)
        assert response.status_code == 404, response.text
        mismatch = {**body, "tenant_id": "other-tenant"}
        response = await http.post("/v1/chat/stream", json=mismatch)
        assert response.status_code == 403, response.text
        assert response.json()["details"][0]["reason"] == "TENANT_MISMATCH"


def _grpc_web_messages(data: bytes) -> tuple[list[bytes], bytes]:
    """Split a gRPC-web body into its message frames and its trailer frame."""
    messages, trailer, at = [], b"", 0
    while at < len(data):
        flag, length = data[at], struct.unpack(">I", data[at + 1 : at + 5])[0]
        payload = data[at + 5 : at + 5 + length]
        if flag & 0x80:
            trailer = payload
        else:
            messages.append(payload)
        at += 5 + length
    return messages, trailer


async def test_stream_chat_over_grpc_web(platform: Platform, tenant: Tenant) -> None:
    request = pb.StreamChatRequest(tenant_id=tenant.id, user_id="u1", message=QUESTION)
    body = request.SerializeToString()
    async with httpx.AsyncClient(base_url=platform.edge_url, timeout=60) as http:
        reply = await http.post(
            "/supportmesh.realtime.v1.RealtimeService/StreamChat",
            content=b"\x00" + struct.pack(">I", len(body)) + body,
            headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1",
                     "x-api-key": tenant.key},
        )  # fmt: skip
    assert reply.status_code == 200
    frames, trailer = _grpc_web_messages(reply.content)
    events = [message_pb2.StreamEvent.FromString(frame) for frame in frames]
    assert events[0].HasField("heartbeat")
    assert events[-1].HasField("final_message")
    assert "30 days" in events[-1].final_message.message.content
    assert b"grpc-status:0" in trailer.replace(b" ", b"")
