"""Hundreds of WebSocket conversations at once through the edge."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from services.kit.devstack import Platform
from tests.integration.edge import provision

CONNECTIONS = 500


@pytest.mark.slow
async def test_500_concurrent_websocket_conversations_complete(platform: Platform) -> None:
    tenant = await provision.create_tenant(platform, plan="plans/enterprise")
    key = await provision.create_key(platform, tenant, ("chat:write",))
    connector = aiohttp.TCPConnector(limit=0)
    opened = asyncio.Event()
    open_count = 0

    async def converse(http: aiohttp.ClientSession, n: int) -> str:
        nonlocal open_count
        async with http.ws_connect(
            platform.websocket_url, headers={"x-api-key": key.secret}, heartbeat=None
        ) as ws:
            await ws.send_json({"open": {"userId": f"user-{n}"}})
            open_count += 1
            if open_count == CONNECTIONS:
                opened.set()
            # Everyone is connected before anyone asks: 500 open connections at once.
            await asyncio.wait_for(opened.wait(), 120)
            await ws.send_json({"userMessage": {"text": f"What are your opening hours? ({n})"}})
            async for message in ws:
                event = json.loads(message.data)
                if "finalMessage" in event:
                    await ws.close()
                    return "final"
                if "error" in event:
                    return f"{event['error'].get('reason')}: {event['error'].get('message')}"
            return f"closed {ws.close_code}"

    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        outcomes = await asyncio.gather(*(converse(http, n) for n in range(CONNECTIONS)))
    assert outcomes.count("final") == CONNECTIONS, sorted(set(outcomes))
