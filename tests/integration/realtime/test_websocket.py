"""The WebSocket chat at /ws/chat through the Envoy edge."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from services.kit.devstack import Platform
from tests.integration.edge import provision
from tests.integration.realtime.conftest import QUESTION, Tenant


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp client session."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


async def _events(ws: aiohttp.ClientWebSocketResponse) -> AsyncIterator[dict[str, Any]]:
    async for message in ws:
        assert message.type == aiohttp.WSMsgType.TEXT, message
        yield json.loads(message.data)


async def converse(ws: aiohttp.ClientWebSocketResponse, text: str) -> list[dict[str, Any]]:
    """Open a session, ask ``text`` and collect events up to the final message."""
    await ws.send_json({"open": {"userId": "u1"}})
    found: list[dict[str, Any]] = []
    async for event in _events(ws):
        found.append(event)
        if len(found) == 1:
            assert "heartbeat" in event
            assert event["sessionId"]
            await ws.send_json({"userMessage": {"text": text}})
        if "finalMessage" in event or "error" in event:
            break
    return found


async def test_a_conversation_over_websocket(
    platform: Platform, tenant: Tenant, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(platform.websocket_url, headers={"x-api-key": tenant.key}) as ws:
        events = await converse(ws, QUESTION)
        assert "finalMessage" in events[-1], events[-1]
        assert "30 days" in events[-1]["finalMessage"]["message"]["content"]
        answer = events[1:]
        assert sum("tokenDelta" in e for e in answer) >= 2
        assert [int(e["sequence"]) for e in answer] == list(range(1, len(answer) + 1))
        await ws.close()
    assert ws.close_code == 1000


async def test_browsers_authenticate_with_an_access_token_parameter(
    platform: Platform, tenant: Tenant, http: aiohttp.ClientSession
) -> None:
    url = f"{platform.websocket_url}?access_token={tenant.key}"
    async with http.ws_connect(url) as ws:
        events = await converse(ws, QUESTION)
        assert "finalMessage" in events[-1]


@pytest.mark.parametrize(
    ("headers", "status", "reason"),
    [
        ({}, 401, "CREDENTIALS_MISSING"),
        ({"x-api-key": "smk_nope_nope"}, 401, "CREDENTIALS_INVALID"),
        ({"authorization": "Bearer not.a.token"}, 401, "CREDENTIALS_INVALID"),
    ],
)
async def test_bad_credentials_are_refused_before_the_upgrade(
    platform: Platform,
    http: aiohttp.ClientSession,
    headers: dict[str, str],
    status: int,
    reason: str,
) -> None:
    async with http.get(
        platform.websocket_url,
        headers={**headers, "connection": "upgrade", "upgrade": "websocket",
                 "sec-websocket-version": "13", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ=="},
    ) as response:  # fmt: skip
        assert response.status == status
        body = await response.json()
    assert body["details"][0]["reason"] == reason


async def test_a_key_without_the_chat_scope_is_forbidden(
    platform: Platform, tenant: Tenant, http: aiohttp.ClientSession
) -> None:
    reader = await provision.create_key(platform, tenant.id, ("knowledge:read",))
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await http.ws_connect(platform.websocket_url, headers={"x-api-key": reader.secret})
    assert caught.value.status == 403


async def test_a_tenant_header_naming_another_tenant_is_refused(
    platform: Platform, tenant: Tenant, http: aiohttp.ClientSession
) -> None:
    other = await provision.create_tenant(platform)
    headers = {"x-api-key": tenant.key, "x-tenant-id": other}
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await http.ws_connect(platform.websocket_url, headers=headers)
    assert caught.value.status == 403


@pytest.mark.parametrize(
    ("send", "code"),
    [
        ("not json", 1007),
        ('{"userMessage": {"text": 5, "bogus": true}}', 1007),
        (b"\x00\x01", 1003),
        ("x" * (64 * 1024 + 1), 1009),
        ('{"userMessage": {"text": "hello"}}', 4400),  # no open frame first
    ],
)
async def test_bad_frames_close_with_the_right_code_and_hurt_nobody_else(
    platform: Platform,
    tenant: Tenant,
    http: aiohttp.ClientSession,
    send: str | bytes,
    code: int,
) -> None:
    headers = {"x-api-key": tenant.key}
    async with http.ws_connect(platform.websocket_url, headers=headers) as bystander:
        async with http.ws_connect(platform.websocket_url, headers=headers) as ws:
            if isinstance(send, bytes):
                await ws.send_bytes(send)
            else:
                await ws.send_str(send)
            frames = [json.loads(m.data) async for m in ws if m.type == aiohttp.WSMsgType.TEXT]
        assert ws.close_code == code
        if code not in (1009,):  # aiohttp closes an oversized frame's connection itself
            assert frames, "no error frame before the close"
            assert "error" in frames[-1], frames
        events = await converse(bystander, QUESTION)
        assert "finalMessage" in events[-1]
