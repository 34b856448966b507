"""The engine: wall-time budgets, tenants in thread ids, durability across engines and crashes."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from services.kit.errors import FailedPrecondition, NotFound
from services.orchestrator.workflow import (
    Workflow,
    WorkflowEngine,
    build_graph,
    load_workflow,
    run_config,
    thread_id,
)
from tests.unit.orchestrator.doubles import TOOL_SPECS, Doubles, no_sleep

SLOW = textwrap.dedent("""
    name: slow
    version: 1.0.0
    budgets: {wall_ms: 50}
    steps:
      - id: lookup
        type: tool
        tool: orders.get
        input: {order_id: "${input.order_id}"}
      - id: answer
        type: llm
        config: {tier: SLM_A, prompt: "Status: ${lookup.status}"}
        budget: {wall_ms: 1000}
""")


class Crash(BaseException):
    """A process dying mid-step: nothing in the run can catch it."""


@pytest.fixture
def slow() -> Workflow:
    return load_workflow(SLOW, known_tools=TOOL_SPECS)


async def test_a_step_past_its_wall_budget_times_out_gracefully(
    slow: Workflow, engine: WorkflowEngine, doubles: Doubles
) -> None:
    doubles.tools.delays["orders.get"] = 5.0
    run = await engine.start(slow, tenant_id="acme", run_id="w1", input={"order_id": "o-1"})
    assert (run.status, run.reason) == ("FAILED", "TIMEOUT")
    assert run.answer == slow.fallback.failure_message
    assert "ran past its 50 ms budget" in run.message
    assert run.steps[0]["latency_ms"] < 1000
    assert [e.phase for e in doubles.tools.events] == ["requested", "failed"]
    assert doubles.models.requests == []


async def test_a_step_budget_overrides_the_workflow_default(
    slow: Workflow, engine: WorkflowEngine, doubles: Doubles
) -> None:
    doubles.models.delay = 0.2  # longer than the workflow's 50 ms, within the step's 1000 ms
    run = await engine.start(slow, tenant_id="acme", run_id="w2", input={"order_id": "o-1"})
    assert run.status == "SUCCEEDED"
    assert doubles.models.requests[0].prompt == "Status: SHIPPED"


async def test_the_thread_id_carries_the_tenant(
    slow: Workflow, engine: WorkflowEngine, doubles: Doubles
) -> None:
    assert thread_id("acme", "r1") == "acme:r1"
    assert run_config("acme", "r1", slow)["configurable"] == {"thread_id": "acme:r1"}
    await engine.start(slow, tenant_id="acme", run_id="same", input={"order_id": "o-1"})
    await engine.start(slow, tenant_id="globex", run_id="same", input={"order_id": "o-2"})
    acme, globex = await engine.get("acme", "same"), await engine.get("globex", "same")
    assert acme is not None
    assert globex is not None
    assert (acme.state["input"], globex.state["input"]) == (
        {"order_id": "o-1"},
        {"order_id": "o-2"},
    )
    assert await engine.get("initech", "same") is None


async def test_a_waiting_run_resumes_in_another_engine(
    workflows: dict[str, Workflow], doubles: Doubles
) -> None:
    saver = InMemorySaver()  # the shared checkpointer stands in for PostgreSQL
    first = WorkflowEngine(doubles.ports, saver, sleep=no_sleep)
    run = await first.start(
        workflows["faq"], tenant_id="acme", run_id="h1", input={"query": "Can I pay by invoice?"}
    )
    assert run.status == "WAITING_FOR_HUMAN"
    second = WorkflowEngine(doubles.ports, saver, sleep=no_sleep)
    run = await second.resume(
        workflows["faq"],
        tenant_id="acme",
        run_id="h1",
        step_id="handoff",
        value={"answer": "Yes, for business accounts."},
    )
    assert (run.status, run.answer) == ("SUCCEEDED", "Yes, for business accounts.")
    snapshot = await second.graph.aget_state(run_config("acme", "h1", workflows["faq"]))
    assert snapshot.next == ()
    assert snapshot.interrupts == ()


async def test_a_crashed_run_recovers_without_repeating_finished_steps(
    workflows: dict[str, Workflow], doubles: Doubles
) -> None:
    order: dict[str, Any] = {
        "customer_id": "cus_1",
        "email": "ada@example.com",
        "currency": "EUR",
        "payment_method": "pm_1",
        "items": [{"sku": "MUG", "quantity": 1, "unit_price_cents": 900}],
    }
    doubles.models.replies = {"SLM_A": "Your order is placed."}
    saver = InMemorySaver()
    doubles.tools.fail("mail.send", Crash())
    with pytest.raises(Crash):
        await WorkflowEngine(doubles.ports, saver).start(
            workflows["order"], tenant_id="acme", run_id="c1", input=order
        )
    doubles.tools.failures.clear()
    restarted = WorkflowEngine(doubles.ports, saver, sleep=no_sleep)
    run = await restarted.recover(workflows["order"], tenant_id="acme", run_id="c1")
    assert run.status == "SUCCEEDED"
    # The order and the charge were checkpointed before the crash: only the email is redone.
    assert doubles.tools.names() == ["orders.create", "payment.charge", "mail.send", "mail.send"]
    assert len({c.key for c in doubles.tools.calls if c.tool == "mail.send"}) == 1


async def test_a_run_is_pinned_to_its_workflow_version(
    workflows: dict[str, Workflow], engine: WorkflowEngine
) -> None:
    await engine.start(workflows["faq"], tenant_id="acme", run_id="v1", input={"query": "Hi"})
    with pytest.raises(FailedPrecondition, match=r"runs faq 1\.0\.0, not tracking 1\.0\.0"):
        await engine.resume(
            workflows["tracking"],
            tenant_id="acme",
            run_id="v1",
            step_id="handoff",
            value={"answer": "x"},
        )
    with pytest.raises(NotFound):
        await engine.recover(workflows["faq"], tenant_id="acme", run_id="nope")


def test_the_graph_follows_plan_route_work_verify_repair_commit() -> None:
    nodes = set(build_graph().get_graph().nodes)
    assert {"plan", "route", "work", "verify", "repair", "commit"} <= nodes
    assert {"escalate", "await_human", "fallback", "compensate"} <= nodes


async def test_a_gate_whose_target_was_skipped_is_skipped(
    engine: WorkflowEngine, doubles: Doubles
) -> None:
    workflow = load_workflow(
        textwrap.dedent("""
            name: skip
            version: 1.0.0
            steps:
              - id: answer
                type: llm
                condition: input.vip == true
                config: {tier: LLM}
              - id: check
                type: gate
                target: answer
                validators: [{type: factuality}]
        """),
        known_tools=TOOL_SPECS,
    )
    run = await engine.start(workflow, tenant_id="acme", run_id="g1", input={"vip": False})
    assert run.status == "SUCCEEDED"
    assert [(s["step_id"], s["status"]) for s in run.steps] == [
        ("answer", "SKIPPED"),
        ("check", "SKIPPED"),
    ]
