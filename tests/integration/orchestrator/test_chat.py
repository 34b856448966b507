"""SendChatMessage end to end through the REST edge, for the five workflows."""

from __future__ import annotations

from typing import Any

import asyncpg

from tests.integration.orchestrator.conftest import Client

ORDER: dict[str, Any] = {
    "intent": "order",
    "email": "ann@example.com",
    "currency": "USD",
    "payment_method": "tok_visa",
    "items": [{"sku": "mug", "quantity": 2, "unit_price_cents": 1250}],
}


async def _rows(admin_db: asyncpg.Connection, run_id: str) -> tuple[asyncpg.Record, int]:
    run = await admin_db.fetchrow("SELECT * FROM app.agent_runs WHERE run_id = $1::uuid", run_id)
    executions = await admin_db.fetchval(
        "SELECT count(*) FROM app.workflow_executions WHERE run_id = $1::uuid", run_id
    )
    assert run is not None
    return run, int(executions)


async def test_order_places_charges_and_confirms(
    client: Client, admin_db: asyncpg.Connection
) -> None:
    answer = await client.chat("I want to buy two mugs", **ORDER)
    assert answer["status"] == "RUN_STATUS_SUCCEEDED", answer
    assert answer["tier"] in ("SLM_A", "SLM_B", "LLM")
    assert answer["tokens"] > 0
    assert answer["costUsd"] > 0
    assert "placed and paid" in answer["answer"]["content"]
    run = await client.run(answer["runId"])
    assert run["workflow"] == "order"
    assert run["output"]["charge_id"].startswith("ch_")
    row, executions = await _rows(admin_db, answer["runId"])
    assert row["tenant_id"] == client.tenant
    assert row["status"] == "SUCCEEDED"
    assert executions == 1
    order = await admin_db.fetchrow(
        "SELECT * FROM app.orders WHERE order_id = $1::uuid", run["output"]["order_id"]
    )
    assert order is not None
    assert order["status"] != "CANCELLED"


async def test_tracking_reports_the_order_status(client: Client) -> None:
    placed = await client.chat("I want to buy two mugs", **ORDER)
    order_id = (await client.run(placed["runId"]))["output"]["order_id"]
    answer = await client.chat("Where is my order?", order_id=order_id)
    assert answer["status"] == "RUN_STATUS_SUCCEEDED", answer
    assert order_id in answer["answer"]["content"]
    assert (await client.run(answer["runId"]))["workflow"] == "tracking"


async def test_payment_authorizes_and_confirms(client: Client) -> None:
    answer = await client.chat(
        "I'd like to pay my bill",
        email="bo@example.com", amount_cents=4200, currency="EUR", payment_method="tok_visa",
    )  # fmt: skip
    assert answer["status"] == "RUN_STATUS_SUCCEEDED", answer
    run = await client.run(answer["runId"])
    assert run["workflow"] == "payment"
    assert run["tokens"] > 0


async def test_lead_is_captured(client: Client) -> None:
    answer = await client.chat(
        "We are interested in a demo", email="cy@example.com", name="Cy", company="Acme"
    )
    assert answer["status"] == "RUN_STATUS_SUCCEEDED", answer
    run = await client.run(answer["runId"])
    assert run["workflow"] == "lead"
    assert any(step["tool"] == "crm.create_lead" for step in run["steps"])


async def test_faq_answers_from_the_knowledge_base_with_citations(client: Client) -> None:
    await client.learn(
        "Returns policy. Items can be returned within 30 days of delivery for a full refund. "
        "Refunds are issued to the original payment method within five business days."
    )
    answer = await client.chat("Can items be returned within 30 days of delivery?")
    assert answer["status"] == "RUN_STATUS_SUCCEEDED", answer
    assert "30 days" in answer["answer"]["content"]
    assert answer["citations"]
    assert answer["citations"][0]["documentId"]


async def test_faq_without_knowledge_waits_for_a_human_then_resumes(client: Client) -> None:
    await client.warm_up()
    answer = await client.chat("What is your returns policy?")
    assert answer["status"] == "RUN_STATUS_WAITING_FOR_HUMAN", answer
    run = await client.run(answer["runId"])
    waiting = run["humanInputRequest"]
    assert waiting["stepId"] == "handoff"
    response = await client.http.post(
        f"/v1/tenants/{client.tenant}/runs/{answer['runId']}:resume",
        json={"step_id": "handoff", "input": {"answer": "30 days, free."}, "request_id": "r1"},
    )
    assert response.status_code == 200, response.text
    resumed = response.json()["run"]
    assert resumed["status"] == "RUN_STATUS_SUCCEEDED"


async def test_runs_are_listed_per_tenant_in_pages(client: Client, other: Client) -> None:
    for _ in range(3):
        await client.chat("Where is my order?", order_id="0b0f9c4e-5d1a-4c1e-9a39-8f2f5c8f1a01")
    first = (await client.http.get(f"/v1/tenants/{client.tenant}/runs?page_size=2")).json()
    assert len(first["runs"]) == 2
    assert first["nextPageToken"]
    second = await client.http.get(
        f"/v1/tenants/{client.tenant}/runs",
        params={"page_size": 2, "page_token": first["nextPageToken"]},
    )
    assert len(second.json()["runs"]) == 1
    assert (await other.http.get(f"/v1/tenants/{other.tenant}/runs")).json()["runs"] == []
    foreign = await other.http.get(f"/v1/tenants/{client.tenant}/runs")
    assert foreign.status_code == 404
    stolen = await other.http.get(
        f"/v1/tenants/{other.tenant}/runs/{first['runs'][0]['name'].rsplit('/', 1)[1]}"
    )
    assert stolen.status_code == 404


async def test_a_body_tenant_other_than_the_key_is_refused(client: Client, other: Client) -> None:
    body = {"message": "hi", "tenant_id": client.tenant, "user_id": "u1"}
    response = await other.http.post("/v1/chat/message", json=body)
    assert response.status_code == 403
