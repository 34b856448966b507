"""tracking.yaml end to end: lookup, a checked status answer, a conditional notification."""

from __future__ import annotations

import pytest

from services.kit.errors import NotFound, Unavailable
from services.orchestrator.workflow import Workflow, WorkflowEngine
from tests.unit.orchestrator.doubles import ORDER_ID, Doubles
from tests.unit.orchestrator.samples import ASK, SHIPPED


@pytest.fixture
def tracking(workflows: dict[str, Workflow], doubles: Doubles) -> Workflow:
    doubles.models.replies = {"SLM_A": SHIPPED}
    return workflows["tracking"]


async def test_a_shipped_order_is_described_and_notified(
    tracking: Workflow, engine: WorkflowEngine, doubles: Doubles
) -> None:
    run = await engine.start(tracking, tenant_id="acme", run_id="t1", input=ASK)
    assert (run.status, run.answer) == ("SUCCEEDED", SHIPPED)
    assert doubles.tools.names() == ["orders.get", "mail.send"]
    mail = doubles.tools.calls[1].arguments
    assert mail["subject"] == f"Order {ORDER_ID} is SHIPPED"
    assert run.output == {"order_id": ORDER_ID, "status": "SHIPPED", "notified": "<m1@test>"}
    prompt = doubles.models.requests[0]
    assert prompt.tool_results["lookup"]["carrier"] == "DHL"
    assert [c["step_id"] for c in run.completed] == ["notify"]  # the read is not a side effect


async def test_an_order_not_yet_shipped_is_not_notified(
    tracking: Workflow, engine: WorkflowEngine, doubles: Doubles
) -> None:
    doubles.tools.handlers["orders.get"] = lambda a: {"order_id": a["order_id"], "status": "PAID"}
    doubles.models.replies = {"SLM_A": f"Your order {ORDER_ID} is paid."}
    run = await engine.start(tracking, tenant_id="acme", run_id="t2", input=ASK)
    assert run.status == "SUCCEEDED"
    assert doubles.tools.names() == ["orders.get"]
    assert (run.steps[-1]["step_id"], run.steps[-1]["status"]) == ("notify", "SKIPPED")


async def test_a_wrong_date_fails_factuality_and_escalates(
    tracking: Workflow, engine: WorkflowEngine, doubles: Doubles
) -> None:
    doubles.models.replies = {"SLM_A": f"Order {ORDER_ID} arrives on 2026-11-02.", "SLM_B": SHIPPED}
    run = await engine.start(tracking, tenant_id="acme", run_id="t3", input=ASK)
    assert (run.status, run.tier, run.answer) == ("SUCCEEDED", "SLM_B", SHIPPED)
    assert "unsupported facts 2026-11-02" in run.state["repairs"][0]["message"]


async def test_a_failed_notification_does_not_fail_the_answer(
    tracking: Workflow, engine: WorkflowEngine, doubles: Doubles
) -> None:
    doubles.tools.fail("mail.send", Unavailable("smtp down"))
    run = await engine.start(tracking, tenant_id="acme", run_id="t4", input=ASK)
    assert (run.status, run.answer, run.degraded) == ("SUCCEEDED", SHIPPED, False)
    assert (run.steps[-1]["status"], run.steps[-1]["attempts"]) == ("FAILED", 3)


async def test_an_unknown_order_fails_with_its_reason(
    tracking: Workflow, engine: WorkflowEngine, doubles: Doubles
) -> None:
    doubles.tools.fail("orders.get", NotFound("no such order"))
    run = await engine.start(tracking, tenant_id="acme", run_id="t5", input=ASK)
    assert (run.status, run.reason) == ("FAILED", "RESOURCE_NOT_FOUND")
    assert run.answer == tracking.fallback.failure_message
    assert doubles.tools.names() == ["orders.get"]  # NOT_FOUND is not worth retrying
