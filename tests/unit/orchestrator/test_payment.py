"""payment.yaml end to end: authorize, capture when needed, confirm, refund on failure."""

from __future__ import annotations

import pytest

from services.orchestrator.workflow import ToolCallError, Workflow, WorkflowEngine
from tests.unit.orchestrator.doubles import Doubles
from tests.unit.orchestrator.samples import PAY
from tests.unit.orchestrator.samples import PAY_ANSWER as ANSWER


@pytest.fixture
def payment(workflows: dict[str, Workflow], doubles: Doubles) -> Workflow:
    doubles.models.replies = {"SLM_A": ANSWER}
    return workflows["payment"]


async def test_an_authorized_charge_is_captured_and_confirmed(
    payment: Workflow, engine: WorkflowEngine, doubles: Doubles
) -> None:
    run = await engine.start(payment, tenant_id="acme", run_id="p1", input=PAY)
    assert (run.status, run.answer) == ("SUCCEEDED", ANSWER)
    assert doubles.tools.names() == ["payment.charge", "payment.capture", "mail.send"]
    assert doubles.tools.calls[0].arguments["capture"] is False
    assert run.output == {"charge_id": "ch_1", "captured": True, "receipt_message_id": "<m1@test>"}


async def test_a_charge_captured_at_once_skips_the_capture(
    payment: Workflow, engine: WorkflowEngine, doubles: Doubles
) -> None:
    charge = doubles.tools.handlers["payment.charge"]
    doubles.tools.handlers["payment.charge"] = lambda a: {**charge(a), "captured": True}
    run = await engine.start(payment, tenant_id="acme", run_id="p2", input=PAY)
    assert run.status == "SUCCEEDED"
    assert doubles.tools.names() == ["payment.charge", "mail.send"]
    assert run.state["outputs"]["processing"] == {"value": False}


async def test_a_failed_receipt_refunds_the_charge_once(
    payment: Workflow, engine: WorkflowEngine, doubles: Doubles
) -> None:
    doubles.tools.fail("mail.send", ToolCallError("bounced"))
    run = await engine.start(payment, tenant_id="acme", run_id="p3", input=PAY)
    assert run.status == "COMPENSATED"
    # The capture has no compensation of its own: refunding the charge covers it.
    assert doubles.tools.names() == [
        "payment.charge",
        "payment.capture",
        "mail.send",
        "payment.refund",
    ]
    assert [c["step_id"] for c in run.completed] == ["charge", "capture"]
    assert [c["compensation"] is None for c in run.completed] == [False, True]
