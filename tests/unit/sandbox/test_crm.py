"""The CRM sandbox: idempotent lead creation, status history, reverting a change once."""

from __future__ import annotations

from typing import Any

import aiohttp

from services.sandbox.crm import CrmSandbox


async def call(
    http: aiohttp.ClientSession, method: str, url: str, body: dict[str, Any], key: str = ""
) -> tuple[int, dict[str, Any]]:
    """Send JSON; return status and body."""
    headers = {"Idempotency-Key": key} if key else {}
    async with http.request(method, url, json=body, headers=headers) as response:
        return response.status, await response.json()


async def test_lead_creation_is_idempotent(crm: CrmSandbox, http: aiohttp.ClientSession) -> None:
    lead = {"email": "ada@example.com", "name": "Ada"}
    first = await call(http, "POST", f"{crm.url}/v1/leads", lead, "lead-1")
    second = await call(http, "POST", f"{crm.url}/v1/leads", lead, "lead-1")
    assert first == second
    assert first[0] == 201
    assert len(crm.leads) == 1
    other = await call(http, "POST", f"{crm.url}/v1/leads", {**lead, "name": "Bob"}, "lead-1")
    assert other[0] == 409
    bad = await call(http, "POST", f"{crm.url}/v1/leads", {"email": "nope"})
    assert bad[0] == 400


async def test_a_status_change_reverts_once_to_the_previous_status(
    crm: CrmSandbox, http: aiohttp.ClientSession
) -> None:
    _, lead = await call(http, "POST", f"{crm.url}/v1/leads", {"email": "a@example.com"})
    url = f"{crm.url}/v1/leads/{lead['id']}"
    status, moved = await call(http, "PATCH", url, {"status": "qualified"}, "move-1")
    assert status == 200
    assert (moved["change"]["from_status"], moved["status"]) == ("new", "qualified")
    change = moved["change"]["change_id"]
    status, reverted = await call(http, "PATCH", url, {"reverts": change}, "undo-1")
    assert (status, reverted["status"], reverted["change"]["reverts"]) == (200, "new", change)
    assert await call(http, "PATCH", url, {"reverts": change}, "undo-1") == (status, reverted)
    status, again = await call(http, "PATCH", url, {"reverts": change}, "undo-2")
    assert (status, again["error"]["code"]) == (409, "change_already_reverted")
    async with http.get(url) as response:
        stored = await response.json()
    assert stored["status"] == "new"
    assert len(stored["history"]) == 3


async def test_reverting_a_superseded_change_or_a_creation(
    crm: CrmSandbox, http: aiohttp.ClientSession
) -> None:
    _, lead = await call(http, "POST", f"{crm.url}/v1/leads", {"email": "b@example.com"})
    url = f"{crm.url}/v1/leads/{lead['id']}"
    _, moved = await call(http, "PATCH", url, {"status": "contacted"})
    await call(http, "PATCH", url, {"status": "converted"})
    status, body = await call(http, "PATCH", url, {"reverts": moved["change"]["change_id"]})
    assert (status, body["error"]["code"]) == (409, "change_superseded")
    _, fresh = await call(http, "POST", f"{crm.url}/v1/leads", {"email": "c@example.com"})
    fresh_url = f"{crm.url}/v1/leads/{fresh['id']}"
    status, archived = await call(
        http, "PATCH", fresh_url, {"reverts": fresh["change"]["change_id"]}
    )
    assert (status, archived["status"]) == (200, "archived")
    async with http.get(f"{crm.url}/v1/leads/lead_nope") as response:
        assert response.status == 404
