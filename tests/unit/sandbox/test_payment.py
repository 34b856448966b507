"""The payment sandbox speaks its HTTP API: idempotency, failures, captures, refunds."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from services.sandbox.payment import DECLINED_SOURCE, DOWN_SOURCE, HANGING_SOURCE, PaymentSandbox

CHARGE = {"amount": 2500, "currency": "usd", "customer": "cus_1"}


async def post(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any], key: str = ""
) -> tuple[int, dict[str, Any], bool]:
    """POST JSON; return status, body and whether the answer was a replay."""
    headers = {"Idempotency-Key": key} if key else {}
    async with http.post(url, json=body, headers=headers) as response:
        replayed = response.headers.get("Idempotent-Replayed") == "true"
        return response.status, await response.json(), replayed


async def test_charges_need_an_idempotency_key(
    payment: PaymentSandbox, http: aiohttp.ClientSession
) -> None:
    status, body, _ = await post(http, f"{payment.url}/v1/charges", CHARGE)
    assert status == 400
    assert body["error"]["code"] == "idempotency_key_required"
    assert not payment.charges


async def test_same_key_and_body_replays_the_same_charge(
    payment: PaymentSandbox, http: aiohttp.ClientSession
) -> None:
    first = await post(http, f"{payment.url}/v1/charges", CHARGE, "k-1")
    second = await post(http, f"{payment.url}/v1/charges", CHARGE, "k-1")
    assert first[0] == second[0] == 200
    assert first[1] == second[1]
    assert (first[2], second[2]) == (False, True)
    assert len(payment.charges) == 1
    async with http.get(f"{payment.url}/v1/charges/{first[1]['id']}") as response:
        assert (await response.json())["amount"] == 2500


async def test_same_key_with_another_body_is_a_conflict(
    payment: PaymentSandbox, http: aiohttp.ClientSession
) -> None:
    await post(http, f"{payment.url}/v1/charges", CHARGE, "k-2")
    status, body, _ = await post(http, f"{payment.url}/v1/charges", {**CHARGE, "amount": 1}, "k-2")
    assert status == 409
    assert body["error"]["code"] == "idempotency_key_mismatch"
    assert len(payment.charges) == 1


async def test_a_declining_source_fails_the_charge_and_the_decline_is_replayed(
    payment: PaymentSandbox, http: aiohttp.ClientSession
) -> None:
    declined = {**CHARGE, "source": DECLINED_SOURCE}
    status, body, _ = await post(http, f"{payment.url}/v1/charges", declined, "k-3")
    assert status == 402
    assert body["error"]["code"] == "card_declined"
    assert payment.charges[body["error"]["charge"]]["status"] == "failed"
    again = await post(http, f"{payment.url}/v1/charges", declined, "k-3")
    assert again[:2] == (402, body)
    assert again[2]


async def test_server_errors_are_not_remembered(
    payment: PaymentSandbox, http: aiohttp.ClientSession
) -> None:
    down = {**CHARGE, "source": DOWN_SOURCE}
    for _ in range(2):
        status, _, replayed = await post(http, f"{payment.url}/v1/charges", down, "k-4")
        assert status == 503
        assert not replayed
    payment.fail_next(1)
    assert (await post(http, f"{payment.url}/v1/charges", CHARGE, "k-5"))[0] == 503
    assert (await post(http, f"{payment.url}/v1/charges", CHARGE, "k-5"))[0] == 200


async def test_a_key_in_flight_gets_a_retryable_conflict(
    payment: PaymentSandbox, http: aiohttp.ClientSession
) -> None:
    hanging = {**CHARGE, "source": HANGING_SOURCE}
    first = asyncio.create_task(post(http, f"{payment.url}/v1/charges", hanging, "k-6"))
    await payment.hanging.wait()
    status, body, _ = await post(http, f"{payment.url}/v1/charges", hanging, "k-6")
    assert status == 409
    assert body["error"]["code"] == "idempotency_key_in_use"
    payment.release_hung()
    assert (await first)[0] == 200
    assert (await post(http, f"{payment.url}/v1/charges", hanging, "k-6"))[2]


async def test_capture_then_refund_and_refund_is_idempotent(
    payment: PaymentSandbox, http: aiohttp.ClientSession
) -> None:
    _, charge, _ = await post(http, f"{payment.url}/v1/charges", {**CHARGE, "capture": False}, "c")
    assert not charge["captured"]
    capture_url = f"{payment.url}/v1/charges/{charge['id']}/capture"
    status, captured, _ = await post(http, capture_url, {})
    assert status == 200
    assert captured["captured"]
    status, body, _ = await post(http, capture_url, {})
    assert (status, body["error"]["code"]) == (400, "charge_already_captured")
    refund = {"charge": charge["id"]}
    first = await post(http, f"{payment.url}/v1/refunds", refund, "r-1")
    second = await post(http, f"{payment.url}/v1/refunds", refund, "r-1")
    assert first[0] == 200
    assert first[1] == second[1]
    assert len(payment.refunds) == 1
    assert payment.charges[charge["id"]]["refunded"]
    status, body, _ = await post(http, f"{payment.url}/v1/refunds", refund, "r-2")
    assert (status, body["error"]["code"]) == (400, "charge_already_refunded")
    async with http.get(f"{payment.url}/v1/refunds/{first[1]['id']}") as response:
        assert (await response.json())["amount"] == 2500


async def test_unknown_charges_and_missing_credentials(http: aiohttp.ClientSession) -> None:
    sandbox = PaymentSandbox(api_key="sk_test_1")
    await sandbox.run()
    try:
        async with http.get(f"{sandbox.url}/v1/charges/ch_nope") as response:
            assert response.status == 401
        headers = {"Authorization": "Bearer sk_test_1"}
        async with http.get(f"{sandbox.url}/v1/charges/ch_nope", headers=headers) as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "resource_missing"
    finally:
        await sandbox.close()
