"""A quiet connection polls Valkey less and less, yet hears at once of a message queued for
its session on another instance (a pub/sub nudge); polling still finds it without one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.realtime.connection import IDLE_BACKOFF, Connection
from services.realtime.sessions import NUDGE_CHANNEL
from tests.integration.realtime.conftest import (
    QUESTION,
    Chat,
    Instance,
    StartInstance,
    Tenant,
    mesh_metadata,
)


def answered(instance: Instance) -> float:
    """Answers the instance has had the orchestrator produce."""
    return instance.metric(
        "grpc_client_handled_total", grpc_service="supportmesh.orchestrator.v1.OrchestratorService",
        grpc_method="StreamRun", grpc_code="OK",
    )  # fmt: skip


async def two_tabs(tenant: Tenant, asking: Instance, quiet: Instance) -> tuple[Chat, Chat]:
    """One session open on ``quiet``, then on ``asking`` too (same user, two devices)."""
    watching = Chat(quiet.stub, mesh_metadata(tenant))
    await watching.open()
    talking = Chat(asking.stub, mesh_metadata(tenant))
    await talking.open(session_id=watching.session_id)
    return talking, watching


async def test_a_message_queued_elsewhere_wakes_a_quiet_connection(
    tenant: Tenant, start_instance: StartInstance
) -> None:
    # Polling every 60 s: within the 20 s allowed only the nudge can bring the answer.
    asking, quiet = await start_instance(poll_s=60.0), await start_instance(poll_s=60.0)
    talking, watching = await two_tabs(tenant, asking, quiet)
    await asyncio.sleep(0.2)  # the quiet side is now waiting on its hub
    await talking.say(QUESTION)
    asked = await asyncio.wait_for(talking.until_final(), 20)
    seen = await asyncio.wait_for(watching.until_final(), 20)
    assert (
        [e.sequence for e in seen] == [e.sequence for e in asked] == list(range(1, len(asked) + 1))
    )
    assert seen[-1].final_message == asked[-1].final_message
    assert "30 days" in seen[-1].final_message.message.content
    # The instance the message was sent to answered it; the other only followed the log.
    assert (answered(asking), answered(quiet)) == (1, 0)
    for chat in (talking, watching):
        chat.call.cancel()


async def test_a_stray_message_on_the_nudge_channel_is_skipped(
    tenant: Tenant, start_instance: StartInstance
) -> None:
    asking, quiet = await start_instance(poll_s=60.0), await start_instance(poll_s=60.0)
    assert quiet.app.realtime is not None
    redis: Any = quiet.app.realtime.sessions.redis
    for stray in (b"not json", b"[1]", b"42"):
        await redis.publish(NUDGE_CHANNEL, stray)
    talking, watching = await two_tabs(tenant, asking, quiet)
    await asyncio.sleep(0.2)
    await talking.say(QUESTION)
    asked = await asyncio.wait_for(talking.until_final(), 20)
    seen = await asyncio.wait_for(watching.until_final(), 20)  # the relay still runs
    assert seen[-1].final_message == asked[-1].final_message
    for chat in (talking, watching):
        chat.call.cancel()


async def test_without_the_nudge_polling_still_finds_the_message(
    tenant: Tenant, start_instance: StartInstance
) -> None:
    asking, quiet = await start_instance(), await start_instance(poll_s=0.1)
    assert quiet.app.nudges is not None
    await quiet.app.nudges.stop()  # as if the subscription were down
    talking, watching = await two_tabs(tenant, asking, quiet)
    await asyncio.sleep(1.0)  # long enough to back off to the longest wait
    await talking.say(QUESTION)
    asked = await asyncio.wait_for(talking.until_final(), 20)
    seen = await asyncio.wait_for(watching.until_final(), 20)
    assert [e.sequence for e in seen] == [e.sequence for e in asked]
    assert seen[-1].final_message == asked[-1].final_message
    for chat in (talking, watching):
        chat.call.cancel()


async def test_a_quiet_connection_polls_less_and_less(
    tenant: Tenant, start_instance: StartInstance
) -> None:
    poll_s = 0.05
    instance = await start_instance(poll_s=poll_s)
    assert instance.app.realtime is not None
    sessions: Any = instance.app.realtime.sessions
    polls = 0
    replay = sessions.replay

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal polls
        polls += 1
        return await replay(*args, **kwargs)

    sessions.replay = counted
    chat = Chat(instance.stub, mesh_metadata(tenant))
    await chat.open()
    quiet_s = 2.0
    await asyncio.sleep(quiet_s)
    # Polling every poll_s would be 40 looks; backing off (0.05, 0.1, 0.2, then
    # IDLE_BACKOFF * poll_s = 0.4 s at most) makes about 9. A slow machine only makes fewer.
    assert IDLE_BACKOFF * poll_s == 0.4
    assert polls <= 20
    assert polls >= 3  # it still looks
    # A message of its own still gets its answer, and the connection is no longer quiet.
    await chat.say(QUESTION)
    events = await asyncio.wait_for(chat.until_final(), 20)
    assert "30 days" in events[-1].final_message.message.content
    chat.call.cancel()


async def test_a_feed_stops_when_cancelled_as_a_nudge_arrives(
    tenant: Tenant, start_instance: StartInstance
) -> None:
    # An answer's end nudges its session's feeds just as their streams end and cancel
    # them. A feed that took the nudge instead of the cancellation would keep its stream
    # open until the client's deadline.
    instance = await start_instance()
    realtime = instance.app.realtime
    assert realtime is not None
    session = await realtime.sessions.open(tenant.id, "u1", "")
    connection = Connection(realtime, tenant.id, session, "Chat", 10)
    for _ in range(5):
        feed = asyncio.create_task(connection.feed(0))
        await asyncio.sleep(0.1)  # following: waiting on the hub
        realtime.hub.nudge(connection.key)  # the wake-up and the cancellation meet
        feed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(feed, 10)
