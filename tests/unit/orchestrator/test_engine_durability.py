"""When a run's checkpoints are stored: before and after side effects, and at the end.

The shared InMemorySaver stands in for PostgreSQL: what it holds is what survives a crash.
A crash is a BaseException raised inside a port, which nothing in the run can catch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from services.orchestrator.workflow import (
    CallContext,
    Generation,
    GenerationRequest,
    Workflow,
    WorkflowEngine,
    thread_id,
)
from tests.unit.orchestrator.doubles import Doubles, no_sleep
from tests.unit.orchestrator.samples import ASK, ORDER, ORDER_ANSWER, SHIPPED


class Crash(BaseException):
    """A process dying mid-step."""


def stored(saver: InMemorySaver, tenant: str, run: str) -> dict[str, Any] | None:
    """The run's state as stored, or None when nothing is."""
    found = saver.get_tuple({"configurable": {"thread_id": thread_id(tenant, run)}})
    return None if found is None else dict(found.checkpoint["channel_values"])


@pytest.fixture
def saver() -> InMemorySaver:
    return InMemorySaver()


@pytest.fixture
def engine(doubles: Doubles, saver: InMemorySaver) -> WorkflowEngine:
    return WorkflowEngine(doubles.ports, saver, sleep=no_sleep)


async def test_the_state_that_chose_a_side_effect_is_stored_before_it_is_requested(
    workflows: dict[str, Workflow], engine: WorkflowEngine, saver: InMemorySaver, doubles: Doubles
) -> None:
    seen: dict[str, dict[str, Any] | None] = {}
    handlers = dict(doubles.tools.handlers)

    def spy(tool: str) -> Any:
        def handle(arguments: Mapping[str, Any]) -> dict[str, Any]:
            seen[tool] = stored(saver, "acme", "o1")
            return handlers[tool](arguments)

        return handle

    for tool in ("orders.create", "payment.charge", "mail.send"):
        doubles.tools.handlers[tool] = spy(tool)
    doubles.models.replies = {"SLM_A": ORDER_ANSWER}
    order = workflows["order"]
    run = await engine.start(order, tenant_id="acme", run_id="o1", input=ORDER)
    assert run.status == "SUCCEEDED"

    def at(tool: str) -> tuple[str, list[str]]:
        state = seen[tool]
        assert state is not None, f"nothing was stored before {tool} was requested"
        step = order.steps[state["cursor"]].id
        return step, [entry["step_id"] for entry in state.get("completed", [])]

    # Each call goes out from a stored state whose cursor is at its own step, with every
    # side effect before it already recorded: recovery would replay exactly this call.
    assert at("orders.create") == ("create_order", [])
    assert at("payment.charge") == ("charge", ["create_order"])
    assert at("mail.send") == ("confirm", ["create_order", "charge"])
    final = stored(saver, "acme", "o1")
    assert final is not None
    assert final["status"] == "SUCCEEDED"


async def test_a_crash_after_the_last_side_effect_redoes_only_the_read_only_work(
    workflows: dict[str, Workflow], engine: WorkflowEngine, saver: InMemorySaver, doubles: Doubles
) -> None:
    generate = doubles.models.generate
    crashes = [Crash()]

    async def crashing(call: CallContext, request: GenerationRequest) -> Generation:
        if crashes:
            raise crashes.pop()
        return await generate(call, request)

    doubles.models.generate = crashing  # type: ignore[method-assign]
    doubles.models.replies = {"SLM_A": ORDER_ANSWER}
    with pytest.raises(Crash):
        await engine.start(workflows["order"], tenant_id="acme", run_id="o2", input=ORDER)
    restarted = WorkflowEngine(doubles.ports, saver, sleep=no_sleep)
    run = await restarted.recover(workflows["order"], tenant_id="acme", run_id="o2")
    assert (run.status, run.answer) == ("SUCCEEDED", ORDER_ANSWER)
    # The email's saga record was stored the moment it was sent: nothing is called again.
    assert doubles.tools.names() == ["orders.create", "payment.charge", "mail.send"]
    assert [c["step_id"] for c in run.completed] == ["create_order", "charge", "confirm"]


async def test_a_crash_before_any_side_effect_leaves_nothing_and_the_run_starts_over(
    workflows: dict[str, Workflow], engine: WorkflowEngine, saver: InMemorySaver, doubles: Doubles
) -> None:
    doubles.models.replies = {"SLM_A": SHIPPED}
    doubles.tools.fail("orders.get", Crash())
    with pytest.raises(Crash):
        await engine.start(workflows["tracking"], tenant_id="acme", run_id="t1", input=ASK)
    assert stored(saver, "acme", "t1") is None
    assert await engine.get("acme", "t1") is None
    doubles.tools.failures.clear()
    restarted = WorkflowEngine(doubles.ports, saver, sleep=no_sleep)
    run = await restarted.advance(workflows["tracking"], tenant_id="acme", run_id="t1", input=ASK)
    assert (run.status, run.answer) == ("SUCCEEDED", SHIPPED)
    assert doubles.tools.names() == ["orders.get", "orders.get", "mail.send"]


async def test_a_crash_during_a_side_effect_replays_it_under_the_same_key(
    workflows: dict[str, Workflow], engine: WorkflowEngine, saver: InMemorySaver, doubles: Doubles
) -> None:
    doubles.models.replies = {"SLM_A": ORDER_ANSWER}
    doubles.tools.fail("payment.charge", Crash())
    with pytest.raises(Crash):
        await engine.start(workflows["order"], tenant_id="acme", run_id="o3", input=ORDER)
    doubles.tools.failures.clear()
    restarted = WorkflowEngine(doubles.ports, saver, sleep=no_sleep)
    run = await restarted.advance(workflows["order"], tenant_id="acme", run_id="o3", input=ORDER)
    assert run.status == "SUCCEEDED"
    assert doubles.tools.names() == [
        "orders.create",
        "payment.charge",
        "payment.charge",
        "mail.send",
    ]
    charges = {c.key for c in doubles.tools.calls if c.tool == "payment.charge"}
    assert len(charges) == 1


async def test_a_compensation_is_owed_after_a_crash_between_undo_steps(
    workflows: dict[str, Workflow], engine: WorkflowEngine, saver: InMemorySaver, doubles: Doubles
) -> None:
    doubles.tools.handlers["payment.charge"] = lambda a: {"charge_id": "ch_1", "status": "failed"}
    doubles.tools.fail("orders.cancel", Crash())
    with pytest.raises(Crash):
        await engine.start(workflows["order"], tenant_id="acme", run_id="o4", input=ORDER)
    state = stored(saver, "acme", "o4")
    assert state is not None
    assert state["status"] == "COMPENSATING"
    assert [r["step_id"] for r in state.get("compensations", [])] == ["charge"]
    doubles.tools.failures.clear()
    restarted = WorkflowEngine(doubles.ports, saver, sleep=no_sleep)
    run = await restarted.recover(workflows["order"], tenant_id="acme", run_id="o4")
    assert run.status == "COMPENSATED"
    assert [r["step_id"] for r in run.compensations] == ["charge", "create_order"]
    assert doubles.tools.names().count("payment.refund") == 1


async def test_a_running_thread_reads_its_newest_state_and_others_are_untouched(
    workflows: dict[str, Workflow], engine: WorkflowEngine, saver: InMemorySaver, doubles: Doubles
) -> None:
    seen: list[dict[str, Any] | None] = []
    lookup = doubles.tools.handlers["orders.get"]

    def reading(arguments: Mapping[str, Any]) -> dict[str, Any]:
        seen.append(stored(saver, "acme", "t2"))
        return lookup(arguments)

    doubles.tools.handlers["orders.get"] = reading
    doubles.models.replies = {"SLM_A": SHIPPED}
    await engine.start(workflows["tracking"], tenant_id="acme", run_id="t0", input=ASK)
    before = saver.get_tuple({"configurable": {"thread_id": thread_id("acme", "t0")}})
    run = await engine.start(workflows["tracking"], tenant_id="acme", run_id="t2", input=ASK)
    assert run.status == "SUCCEEDED"
    assert seen[-1] is None  # a read-only lookup needs nothing stored before it
    after = saver.get_tuple({"configurable": {"thread_id": thread_id("acme", "t0")}})
    assert before is not None
    assert after is not None
    assert before.checkpoint["id"] == after.checkpoint["id"]
    again = await engine.start(workflows["tracking"], tenant_id="acme", run_id="t2", input=ASK)
    assert again.state == run.state  # a finished run is read back, not run again
