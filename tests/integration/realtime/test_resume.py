"""Sessions live in Valkey: a client resumes on another instance, and an answer whose
instance died is finished by the next one."""

from __future__ import annotations

import uuid

import grpc
from redis.asyncio import Redis

from services.kit.devstack import Platform
from services.realtime.sessions import Pending, Sessions
from tests.integration.realtime.conftest import (
    QUESTION,
    Chat,
    StartInstance,
    Tenant,
    mesh_metadata,
)


async def test_disconnect_mid_answer_and_resume_on_another_instance_without_a_gap(
    tenant: Tenant, start_instance: StartInstance
) -> None:
    first, second = await start_instance(), await start_instance()
    chat = Chat(first.stub, mesh_metadata(tenant))
    await chat.open()
    await chat.say(QUESTION)
    seen = await chat.next()  # the first event of the answer, then the client is gone
    assert seen.sequence == 1
    assert not seen.HasField("final_message")
    chat.call.cancel()

    again = Chat(second.stub, mesh_metadata(tenant))
    await again.open(session_id=chat.session_id, last_seen=seen.sequence)
    rest = await again.until_final()
    assert [e.sequence for e in rest] == list(range(2, len(rest) + 2))
    assert rest[-1].HasField("final_message")
    assert "30 days" in rest[-1].final_message.message.content
    streamed = "".join(e.token_delta.text for e in [seen, *rest] if e.HasField("token_delta"))
    assert streamed.split() == rest[-1].final_message.message.content.split()
    await again.call.done_writing()
    assert await again.call.read() is grpc.aio.EOF


async def test_an_answer_left_by_a_dead_instance_is_finished_by_the_next(
    platform: Platform, tenant: Tenant, start_instance: StartInstance
) -> None:
    # The state a realtime instance leaves when it dies mid-answer: the message queued and
    # its answer begun, a lease nobody renews (lapsed at once here).
    redis = Redis.from_url(platform.redis_url)
    try:
        dead = Sessions(redis, lease_ms=100)
        session = await dead.open(tenant.id, "u1", "")
        request_id = uuid.uuid4().hex
        await dead.submit(tenant.id, session, Pending(request_id, QUESTION, "u1", {}))
        held, item, taken_over = await dead.next_answer(tenant.id, session, acquire=True)
        assert (held, item is not None and item.request_id, taken_over) == (True, request_id, False)
    finally:
        await redis.aclose()

    survivor = await start_instance(lease_ms=1000, poll_s=0.2)
    chat = Chat(survivor.stub, mesh_metadata(tenant))
    await chat.open(session_id=session)
    events = await chat.until_final()
    # Deltas logged before the crash may be lost or repeated, so a taken-over answer
    # sends its final message only.
    assert [e.WhichOneof("event") for e in events] == ["final_message"]
    assert events[0].sequence == 1
    assert "30 days" in events[0].final_message.message.content
    await chat.call.done_writing()
    assert await chat.call.read() is grpc.aio.EOF
