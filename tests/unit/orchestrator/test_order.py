"""order.yaml end to end: the saga, its compensations in reverse order, exactly once."""

from __future__ import annotations

import pytest

from services.kit.errors import Unavailable
from services.kit.resilience import IdempotencyKey
from services.orchestrator.workflow import ToolCallError, Workflow, WorkflowEngine
from tests.unit.orchestrator.doubles import ORDER_ID, Doubles
from tests.unit.orchestrator.samples import ORDER
from tests.unit.orchestrator.samples import ORDER_ANSWER as ANSWER


@pytest.fixture
def order(workflows: dict[str, Workflow], doubles: Doubles) -> Workflow:
    doubles.models.replies = {"SLM_A": ANSWER}
    return workflows["order"]


async def test_an_order_is_placed_paid_and_confirmed(
    order: Workflow, engine: WorkflowEngine, doubles: Doubles
) -> None:
    run = await engine.start(order, tenant_id="acme", run_id="o1", input=ORDER)
    assert (run.status, run.answer) == ("SUCCEEDED", ANSWER)
    assert doubles.tools.names() == ["orders.create", "payment.charge", "mail.send"]
    charge = doubles.tools.calls[1].arguments
    assert (charge["amount_cents"], charge["order_id"]) == (2500, ORDER_ID)
    assert run.output == {
        "order_id": ORDER_ID,
        "charge_id": "ch_1",
        "confirmation_message_id": "<m1@test>",
    }
    # The saga record: every side effect with its compensation resolved up front.
    plans = [(c["step_id"], c["compensation"]) for c in run.completed]
    assert [(step, plan["tool"] if plan else None) for step, plan in plans] == [
        ("create_order", "orders.cancel"),
        ("charge", "payment.refund"),
        ("confirm", "mail.send_cancellation"),
    ]
    refund = run.completed[1]["compensation"]
    assert refund is not None
    assert refund["input"] == {
        "charge_id": "ch_1",
        "reason": "The order could not be completed.",
    }
    # Write-ahead hooks: requested before, succeeded after, same key.
    phases = [(e.tool, e.phase) for e in doubles.tools.events]
    assert phases[:2] == [("orders.create", "requested"), ("orders.create", "succeeded")]
    key = IdempotencyKey.parse(doubles.tools.calls[0].key)
    assert (key.service, key.tenant_id, key.resource_id) == (
        "orders.create",
        "acme",
        "o1.create_order",
    )


async def test_a_failed_payment_cancels_the_order_exactly_once(
    order: Workflow, engine: WorkflowEngine, doubles: Doubles
) -> None:
    doubles.tools.fail("payment.charge", ToolCallError("card declined", reason="INVALID_STATE"))
    run = await engine.start(order, tenant_id="acme", run_id="o2", input=ORDER)
    assert (run.status, run.reason) == ("COMPENSATED", "INVALID_STATE")
    assert run.answer == order.fallback.failure_message
    # Declined is not retryable: one charge attempt, then only the order is undone.
    assert doubles.tools.names() == ["orders.create", "payment.charge", "orders.cancel"]
    cancel = doubles.tools.calls[-1]
    assert cancel.arguments == {"order_id": ORDER_ID, "reason": "The order could not be completed."}
    original = IdempotencyKey.parse(doubles.tools.calls[0].key)
    derived = IdempotencyKey.parse(cancel.key)
    assert (derived.service, derived.resource_id) == ("orders.cancel", original.resource_id)
    assert derived.timestamp == original.timestamp
    assert [(c["step_id"], c["status"]) for c in run.compensations] == [
        ("create_order", "COMPENSATED")
    ]
    assert ("orders.cancel", "compensated") in [(e.tool, e.phase) for e in doubles.tools.events]
    statuses = [(s["step_id"], s["status"]) for s in run.steps]
    assert statuses[-2:] == [("charge", "FAILED"), ("create_order", "COMPENSATED")]


async def test_a_failed_confirmation_undoes_everything_in_reverse(
    order: Workflow, engine: WorkflowEngine, doubles: Doubles
) -> None:
    doubles.tools.fail("mail.send", Unavailable("smtp down"))
    run = await engine.start(order, tenant_id="acme", run_id="o3", input=ORDER)
    assert (run.status, run.reason) == ("COMPENSATED", "DEPENDENCY_UNAVAILABLE")
    # Unavailable is retryable: three attempts with one key, then refund, then cancel.
    assert doubles.tools.names() == [
        "orders.create",
        "payment.charge",
        "mail.send",
        "mail.send",
        "mail.send",
        "payment.refund",
        "orders.cancel",
    ]
    assert len({call.key for call in doubles.tools.calls if call.tool == "mail.send"}) == 1
    assert [c["step_id"] for c in run.compensations] == ["charge", "create_order"]


async def test_a_declined_status_fails_the_gate_and_compensates(
    order: Workflow, engine: WorkflowEngine, doubles: Doubles
) -> None:
    charge = doubles.tools.handlers["payment.charge"]
    doubles.tools.handlers["payment.charge"] = lambda a: {**charge(a), "status": "failed"}
    run = await engine.start(order, tenant_id="acme", run_id="o4", input=ORDER)
    assert (run.status, run.reason) == ("COMPENSATED", "VALIDATION_FAILED")
    assert doubles.tools.names()[-2:] == ["payment.refund", "orders.cancel"]


async def test_an_invalid_request_touches_nothing(
    order: Workflow, engine: WorkflowEngine, doubles: Doubles
) -> None:
    bad = {**ORDER, "email": "not-an-email"}
    run = await engine.start(order, tenant_id="acme", run_id="o5", input=bad)
    assert (run.status, run.reason) == ("FAILED", "VALIDATION_FAILED")
    assert "is not a 'email'" in run.message
    assert doubles.tools.calls == []
    assert doubles.router.queries == []


async def test_a_compensation_that_keeps_failing_is_reported(
    order: Workflow, engine: WorkflowEngine, doubles: Doubles
) -> None:
    doubles.tools.fail("mail.send", ToolCallError("bounced"))
    doubles.tools.fail("payment.refund", Unavailable("provider down"))
    run = await engine.start(order, tenant_id="acme", run_id="o6", input=ORDER)
    assert run.status == "FAILED"
    assert [(c["step_id"], c["status"]) for c in run.compensations] == [
        ("charge", "FAILED"),
        ("create_order", "COMPENSATED"),  # one failure does not stop the rest
    ]
    assert doubles.tools.names().count("payment.refund") == 3


async def test_starting_a_known_run_again_changes_nothing(
    order: Workflow, engine: WorkflowEngine, doubles: Doubles
) -> None:
    first = await engine.start(order, tenant_id="acme", run_id="o7", input=ORDER)
    again = await engine.start(order, tenant_id="acme", run_id="o7", input=ORDER)
    assert again.status == first.status == "SUCCEEDED"
    assert doubles.tools.names() == ["orders.create", "payment.charge", "mail.send"]


async def test_an_unsupported_answer_falls_back_without_undoing_the_order(
    order: Workflow, engine: WorkflowEngine, doubles: Doubles
) -> None:
    doubles.models.replies = dict.fromkeys(
        ("SLM_A", "SLM_B", "LLM"), "Your order ships tomorrow for free."
    )
    run = await engine.start(order, tenant_id="acme", run_id="o8", input=ORDER)
    assert (run.status, run.degraded, run.reason) == ("SUCCEEDED", True, "VALIDATION_FAILED")
    assert run.answer == order.fallback.message
    assert run.compensations == ()
