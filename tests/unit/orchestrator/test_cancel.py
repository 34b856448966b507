"""Cancelling runs: halted at a safe point, then undone through the saga path, each step once."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from services.orchestrator import cancel
from services.orchestrator.stream import Drive, drive, halt_point
from services.orchestrator.workflow import CallContext, ToolEvent, Workflow, WorkflowEngine
from tests.unit.orchestrator.doubles import Doubles, FakeTools
from tests.unit.orchestrator.samples import ORDER, ORDER_ANSWER


class SafeTools(FakeTools):
    """The tool doubles with the real port's safe points."""

    def __init__(self) -> None:
        super().__init__()
        self.charging = asyncio.Event()

    async def call(
        self, call: CallContext, tool: str, arguments: Mapping[str, Any], idempotency_key: str
    ) -> Mapping[str, Any]:
        halt_point()
        if tool == "payment.charge":
            self.charging.set()
        return await super().call(call, tool, arguments, idempotency_key)

    async def record(self, call: CallContext, event: ToolEvent) -> None:
        if event.phase == "requested":
            halt_point()
        await super().record(call, event)


@pytest.fixture
def doubles() -> Doubles:
    found = Doubles(tools=SafeTools())
    found.models.replies = {"SLM_A": ORDER_ANSWER}
    return found


async def test_a_halted_run_finishes_its_call_then_its_side_effects_are_undone_in_reverse(
    workflows: dict[str, Workflow], engine: WorkflowEngine, doubles: Doubles
) -> None:
    order = workflows["order"]
    doubles.tools.delays["payment.charge"] = 0.05
    current = Drive("o1")

    async def driven() -> None:
        drive(current)
        await engine.start(order, tenant_id="acme", run_id="o1", input=ORDER)

    task = asyncio.create_task(driven())
    assert isinstance(doubles.tools, SafeTools)
    await doubles.tools.charging.wait()
    current.halted = True  # while the charge is under way
    with pytest.raises(Exception, match="Node"):
        await task
    # The charge was not interrupted; the confirmation was never sent, nor announced.
    assert [(e.tool, e.phase) for e in doubles.tools.events][-1] == ("payment.charge", "succeeded")
    view = await cancel.undo(engine, order, "acme", "o1", "the customer changed their mind")
    assert view.status == "COMPENSATED"
    assert (view.reason, view.message) == (cancel.CANCELLED, "the customer changed their mind")
    assert view.answer == order.fallback.failure_message
    assert [(c["step_id"], c["status"]) for c in view.compensations] == [
        ("charge", "COMPENSATED"), ("create_order", "COMPENSATED"),
    ]  # fmt: skip
    assert doubles.tools.names() == [
        "orders.create", "payment.charge", "payment.refund", "orders.cancel",
    ]  # fmt: skip
    undone = [e for e in doubles.tools.events if e.compensates]
    assert [(e.tool, e.phase) for e in undone] == [
        ("payment.refund", "requested"), ("payment.refund", "compensated"),
        ("orders.cancel", "requested"), ("orders.cancel", "compensated"),
    ]  # fmt: skip
    keys = {c.tool: c.key for c in doubles.tools.calls}
    refund = view.completed[1]["compensation"]
    assert refund is not None
    assert keys["payment.refund"] == refund["idempotency_key"]


async def test_a_run_waiting_for_a_human_ends_with_nothing_to_undo(
    workflows: dict[str, Workflow], engine: WorkflowEngine, doubles: Doubles
) -> None:
    faq = workflows["faq"]
    waiting = await engine.start(faq, tenant_id="acme", run_id="f1", input={"query": "Hi?"})
    assert waiting.status == "WAITING_FOR_HUMAN"
    view = await cancel.undo(engine, faq, "acme", "f1", "resolved by phone")
    assert (view.status, view.compensations, view.human_request) == ("COMPENSATED", (), None)
    assert view.answer == faq.fallback.failure_message


async def test_a_run_that_never_started_just_ends(
    workflows: dict[str, Workflow], engine: WorkflowEngine
) -> None:
    view = await cancel.undo(engine, workflows["order"], "acme", "o2", "duplicate")
    assert (view.run_id, view.workflow, view.reason) == ("o2", "order", cancel.CANCELLED)
    assert (view.answer, view.compensations) == ("", ())
