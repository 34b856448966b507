"""Saga compensation and the events a run publishes through the outbox."""

from __future__ import annotations

import asyncpg
from google.protobuf.message import DecodeError

from services.kit.devstack import Platform
from supportmesh.events.v1 import events_pb2
from tests.integration.orchestrator.conftest import Client
from tests.integration.orchestrator.streams import messages, tool_calls
from tests.integration.orchestrator.test_chat import ORDER


async def test_a_declined_payment_after_the_order_compensates_in_reverse_exactly_once(
    client: Client, platform: Platform, admin_db: asyncpg.Connection
) -> None:
    answer = await client.chat(
        "I want to buy two mugs", **{**ORDER, "payment_method": "tok_chargeDeclined"}
    )
    assert answer["status"] == "RUN_STATUS_COMPENSATED", answer
    assert "couldn't place your order" in answer["answer"]["content"]
    run_id = answer["runId"]
    compensations = await admin_db.fetchval(
        "SELECT compensation FROM app.workflow_executions WHERE run_id = $1::uuid", run_id
    )
    assert '"orders.cancel"' in compensations
    order = await admin_db.fetchrow(
        "SELECT status FROM app.orders WHERE tenant_id = $1", client.tenant
    )
    assert order is not None
    assert order["status"] == "CANCELLED"

    calls = await tool_calls(platform, run_id, want=5)
    # Write-ahead order: the order was created, the charge failed, then the order was undone.
    outcomes = [(phase, event.tool) for phase, event in calls if phase != "requested"]
    assert outcomes[0] == ("succeeded", "orders.create")
    assert ("failed", "payment.charge") in outcomes
    assert outcomes[-1] == ("succeeded", "orders.cancel")
    assert [tool for _, tool in outcomes].count("orders.cancel") == 1
    assert "payment.refund" not in [tool for _, tool in outcomes]  # nothing was charged
    undo = next(event for phase, event in calls if event.tool == "orders.cancel")
    assert undo.compensation


async def test_a_run_publishes_requested_started_completed_and_usage(
    client: Client, platform: Platform
) -> None:
    answer = await client.chat("I want to buy two mugs", **ORDER)
    run_id = answer["runId"]

    def mine(data: bytes) -> bool:
        try:  # the stream also holds the DLQ test's malformed event
            return bool(events_pb2.RunEvent.FromString(data).run_id == run_id)
        except DecodeError:
            return False

    runs = await messages(platform, "agent.run.>", mine, want=3)
    assert [subject for subject, _ in runs] == [
        "agent.run.requested", "agent.run.started", "agent.run.completed",
    ]  # fmt: skip
    completed = events_pb2.RunEvent.FromString(runs[-1][1])
    assert completed.tokens > 0
    assert completed.cost_usd > 0
    assert completed.decision_id
    usage = await messages(
        platform, "usage.metered",
        lambda data: events_pb2.UsageMeteredEvent.FromString(data).source_id == run_id, want=2,
    )  # fmt: skip
    assert sorted(events_pb2.UsageMeteredEvent.FromString(d).meter for _, d in usage) == [
        "cost_usd", "tokens",
    ]  # fmt: skip
