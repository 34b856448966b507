"""Run budgets on the real stack: tokens, cost and step wall time end a run gracefully.

The token and cost budgets are exceeded on a second orchestrator whose order and lead
workflows allow less than one model call (``TIGHT_BUDGETS``); the wall-time budget is the
shipped 5,000 ms per step, exceeded by a charge the payment sandbox holds.
"""

from __future__ import annotations

import json
import uuid

import asyncpg

from supportmesh.common.v1 import errors_pb2
from supportmesh.orchestrator.v1 import orchestrator_service_pb2 as pb
from tests.integration.orchestrator.conftest import Client
from tests.integration.orchestrator.process import Orchestrator
from tests.integration.orchestrator.rpc import Rpc, connect
from tests.integration.orchestrator.test_cancel import HUNG
from tests.integration.orchestrator.test_chat import ORDER


async def _undone(admin_db: asyncpg.Connection, run_id: str) -> dict[str, str]:
    """Tool → status of each compensation recorded with the run's execution."""
    raw = await admin_db.fetchval(
        "SELECT compensation FROM app.workflow_executions WHERE run_id = $1::uuid", run_id
    )
    return {entry["tool"]: entry["status"] for entry in json.loads(raw)}


async def test_an_order_over_its_token_budget_is_undone_and_answered_gracefully(
    client: Client, second: Orchestrator, admin_db: asyncpg.Connection
) -> None:
    async with connect(second.target, client.tenant) as there:
        answer = await there.chat("I want to buy two mugs", uuid.uuid4().hex, **ORDER)
        run = await there.get(answer.run_id)
    assert answer.status == pb.RUN_STATUS_COMPENSATED
    assert "couldn't place your order" in answer.answer.content
    assert run.error.reason == errors_pb2.ERROR_REASON_BUDGET_EXCEEDED
    assert "of 10 tokens" in run.error.message
    assert run.tokens > 10
    assert [(s.step_id, s.status) for s in run.steps if s.type == "llm"] == [
        ("answer", pb.STEP_STATUS_FAILED)
    ]
    assert await _undone(admin_db, answer.run_id) == {
        "mail.send_cancellation": "COMPENSATED",
        "payment.refund": "COMPENSATED",
        "orders.cancel": "COMPENSATED",
    }


async def test_a_lead_over_its_cost_budget_is_undone_and_answered_gracefully(
    client: Client, second: Orchestrator, admin_db: asyncpg.Connection
) -> None:
    async with connect(second.target, client.tenant) as there:
        answer = await there.chat(
            "We are interested in a demo", uuid.uuid4().hex,
            email="cy@example.com", name="Cy", company="Acme",
        )  # fmt: skip
        run = await there.get(answer.run_id)
    assert answer.status == pb.RUN_STATUS_COMPENSATED
    assert "couldn't record your details" in answer.answer.content
    assert run.error.reason == errors_pb2.ERROR_REASON_BUDGET_EXCEEDED
    assert "of $0.00" in run.error.message
    assert run.cost_usd > 0.000001
    assert await _undone(admin_db, answer.run_id) == {
        "mail.send_cancellation": "COMPENSATED",
        "crm.revert_lead_status": "COMPENSATED",
    }


async def test_a_step_over_its_wall_budget_times_out_and_the_order_is_undone(
    rpc: Rpc, admin_db: asyncpg.Connection
) -> None:
    answer = await rpc.chat("I want to buy two mugs", uuid.uuid4().hex, **HUNG)
    assert answer.status == pb.RUN_STATUS_COMPENSATED
    assert "couldn't place your order" in answer.answer.content
    run = await rpc.get(answer.run_id)
    assert run.error.reason == errors_pb2.ERROR_REASON_TIMEOUT
    assert "5000 ms" in run.error.message
    assert await _undone(admin_db, answer.run_id) == {"orders.cancel": "COMPENSATED"}
