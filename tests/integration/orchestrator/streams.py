"""Reading the session's JetStream streams in tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from nats.js.api import ConsumerConfig, DeliverPolicy

from services.kit import events
from services.kit.devstack import Platform


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
