"""The answering loop's Valkey steps: lease, next message and "answer begun" in one script."""

from __future__ import annotations

import uuid

from redis.asyncio import Redis

from services.kit.devstack import Platform
from services.realtime.sessions import Pending, Sessions
from supportmesh.spec.v1 import message_pb2


def final(text: str) -> message_pb2.StreamEvent:
    message = message_pb2.ChatMessage(role=message_pb2.ROLE_ASSISTANT, content=text)
    return message_pb2.StreamEvent(final_message=message_pb2.FinalMessage(message=message))


async def test_one_instance_answers_the_queue_in_order_and_knows_a_begun_answer(
    platform: Platform,
) -> None:
    redis = Redis.from_url(platform.redis_url)
    try:
        await _answer_in_order(redis)
    finally:
        await redis.aclose()


async def _answer_in_order(redis: Redis) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    a, b = Sessions(redis, lease_ms=10_000), Sessions(redis, lease_ms=10_000)
    session = await a.open(tenant, "u1", "")
    first, second = Pending("r1", "one", "u1", {}), Pending("r2", "two", "u1", {"k": 1})
    await a.submit(tenant, session, first)
    await a.submit(tenant, session, second)

    assert await a.next_answer(tenant, session, acquire=True) == (True, first, False)
    # The lease is A's: B answers nothing and reads nothing.
    assert await b.next_answer(tenant, session, acquire=True) == (False, None, False)
    # Asked again before its final event is logged, the same answer counts as begun before.
    assert await a.next_answer(tenant, session, acquire=False) == (True, first, True)
    await a.append(tenant, session, final("1"), terminal=True)  # pops the answered message
    assert await a.next_answer(tenant, session, acquire=False) == (True, second, False)
    await a.append(tenant, session, final("2"), terminal=True)
    assert await a.next_answer(tenant, session, acquire=False) == (True, None, False)
    assert await a.release_if_idle(tenant, session)
    # Released: the next instance to look takes the lease (and finds nothing waiting).
    assert await b.next_answer(tenant, session, acquire=True) == (True, None, False)
