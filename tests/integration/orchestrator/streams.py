"""Reading the session's JetStream streams in tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from google.protobuf.message import DecodeError
from nats.js.api import ConsumerConfig, DeliverPolicy

from services.kit import events
from services.kit.devstack import Platform
from supportmesh.events.v1 import events_pb2


async def messages(
    platform: Platform,
    subject: str,
    keep: Callable[[bytes], bool],
    *,
    want: int,
    wait_s: float = 15.0,
) -> list[tuple[str, bytes]]:
    """(subject, data) of the messages on ``subject`` that ``keep`` accepts (``want`` at least)."""
    client, js = await events.connect(platform.nats_url)
    found: list[tuple[str, bytes]] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while loop.time() < deadline:
            found.clear()
            sub = await js.pull_subscribe(
                subject, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
            )
            while True:
                try:
                    batch = await sub.fetch(500, timeout=0.5)
                except TimeoutError:
                    break
                for msg in batch:
                    if keep(msg.data):
                        found.append((msg.subject, msg.data))
                    await msg.ack()
            await sub.unsubscribe()
            if len(found) >= want:
                return found
            await asyncio.sleep(0.3)
    finally:
        await client.close()
    return found


async def tool_calls(
    platform: Platform, run_id: str, *, want: int
) -> list[tuple[str, events_pb2.ToolCallEvent]]:
    """(phase, event) of the run's ``tool.call.*`` events, in stream order."""

    def mine(data: bytes) -> bool:
        try:
            return bool(events_pb2.ToolCallEvent.FromString(data).run_id == run_id)
        except DecodeError:
            return False

    found = await messages(platform, "tool.call.>", mine, want=want)
    return [
        (subject.rpartition(".")[2], events_pb2.ToolCallEvent.FromString(data))
        for subject, data in found
    ]
