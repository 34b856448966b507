"""Webhook signatures verify only untampered, fresh payloads; failed deliveries are retried."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web

from services.sandbox.payment import PaymentSandbox
from services.sandbox.webhooks import SIGNATURE_HEADER, SignatureError, sign, verify_signature

SECRET = "whsec_test"
NOW = 1_760_000_000


def test_a_signed_payload_verifies() -> None:
    payload = b'{"id":"evt_1"}'
    assert verify_signature(payload, sign(payload, SECRET, NOW), SECRET, now=NOW + 10) == NOW


@pytest.mark.parametrize(
    ("payload", "secret", "now", "match"),
    [
        (b'{"id":"evt_2"}', SECRET, NOW, "does not match"),  # tampered body
        (b'{"id":"evt_1"}', "whsec_other", NOW, "does not match"),  # wrong secret
        (b'{"id":"evt_1"}', SECRET, NOW + 301, "tolerance"),  # stale
        (b'{"id":"evt_1"}', SECRET, NOW - 301, "tolerance"),  # from the future
    ],
)
def test_tampered_wrong_or_stale_signatures_are_refused(
    payload: bytes, secret: str, now: int, match: str
) -> None:
    header = sign(b'{"id":"evt_1"}', SECRET, NOW)
    with pytest.raises(SignatureError, match=match):
        verify_signature(payload, header, secret, now=now)


@pytest.mark.parametrize("header", [None, "", "t=1", "v1=abc", "t=x,v1=abc"])
def test_malformed_headers_are_refused(header: str | None) -> None:
    with pytest.raises(SignatureError):
        verify_signature(b"{}", header, SECRET, now=NOW)


def test_any_of_several_signatures_may_match_during_rotation() -> None:
    payload = b"{}"
    good = sign(payload, SECRET, NOW).split(",")[1]
    header = f"t={NOW},v1={'0' * 64},{good}"
    assert verify_signature(payload, header, SECRET, now=NOW) == NOW


async def test_charge_events_are_signed_and_redelivered_until_accepted() -> None:
    received: list[dict[str, Any]] = []

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        verify_signature(body, request.headers.get(SIGNATURE_HEADER), SECRET)
        received.append(json.loads(body))
        return web.Response(status=500 if len(received) == 1 else 200)

    app = web.Application()
    app.add_routes([web.post("/hooks", receive)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    sandbox = PaymentSandbox(
        webhook_url=f"http://127.0.0.1:{port}/hooks", webhook_secret=SECRET, webhook_backoff_s=0
    )
    await sandbox.run()
    try:
        import aiohttp

        async with aiohttp.ClientSession() as http:
            body = {"amount": 100, "currency": "eur", "customer": "cus_9"}
            headers = {"Idempotency-Key": "wh-1"}
            async with http.post(f"{sandbox.url}/v1/charges", json=body, headers=headers) as reply:
                assert reply.status == 200
        assert sandbox.webhooks is not None
        await sandbox.webhooks.drain()
        assert [delivery.status for delivery in sandbox.webhooks.deliveries] == [500, 200]
        assert [event["type"] for event in received] == ["charge.succeeded"] * 2
        assert received[0]["id"] == received[1]["id"]
    finally:
        await sandbox.close()
        await runner.cleanup()
