"""Route decisions asked ahead: a fresh run's router call starts with the run, when certain."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from services.kit.errors import Unavailable
from services.orchestrator.workflow import (
    CallContext,
    Ports,
    RouteDecision,
    Workflow,
    WorkflowEngine,
    load_workflow,
)
from services.orchestrator.workflow.ahead import first_route
from services.orchestrator.workflow.state import RunState
from tests.unit.orchestrator.doubles import TOOL_SPECS, Doubles, no_sleep
from tests.unit.orchestrator.samples import ASK, SHIPPED

STEPS_BEFORE = """\
name: demo
version: 1.0.0
steps:
{before}
  - id: route
    type: router
{route}
  - id: lookup
    type: tool
    tool: orders.get
    input:
      order_id: ${{input.order_id}}
"""
INPUT_GATE = """\
  - id: request
    type: gate
    target: input
    validators:
      - type: json_schema
        schema: {type: object, required: [order_id]}
"""


def demo(before: str = INPUT_GATE, route: str = "") -> Workflow:
    source = STEPS_BEFORE.format(before=before.rstrip("\n"), route=route.rstrip("\n"))
    return load_workflow(source, known_tools=TOOL_SPECS, source="demo.yaml")


def initial(given: Mapping[str, Any]) -> RunState:
    return {"tenant_id": "acme", "run_id": "r1", "user_id": "u1", "input": dict(given)}


def test_the_tracking_route_is_known_at_the_start(workflows: dict[str, Workflow]) -> None:
    found = first_route(workflows["tracking"], initial(ASK))
    assert found is not None
    step, ask = found
    assert (step.id, ask.step_id, ask.query, ask.preference) == (
        "route", "route", ASK["query"], step.tier_preference,
    )  # fmt: skip


def test_input_the_gate_refuses_asks_nothing_ahead(workflows: dict[str, Workflow]) -> None:
    assert first_route(workflows["tracking"], initial({"query": "Where is it?"})) is None


@pytest.mark.parametrize(
    ("before", "route"),
    [
        pytest.param(
            INPUT_GATE + "    condition: input.order_id != null\n", "", id="gate-condition"
        ),
        pytest.param(
            "  - id: look\n    type: tool\n    tool: orders.get\n"
            "    input: {order_id: '${input.order_id}'}\n",
            "",
            id="tool-first",
        ),
        pytest.param(
            INPUT_GATE.replace(
                "schema: {type: object, required: [order_id]}",
                "schema: {type: string}\n        value: input.order_id",
            ),
            "",
            id="schema-of-an-expression",
        ),
        pytest.param(INPUT_GATE, "    condition: input.order_id != null\n", id="router-condition"),
        pytest.param(
            INPUT_GATE, "    config: {query: '${tier} ${input.query}'}\n", id="query-reads-state"
        ),
    ],
)
def test_a_route_that_depends_on_more_than_the_input_is_not_asked_ahead(
    before: str, route: str
) -> None:
    assert first_route(demo(before, route), initial(ASK)) is None


def test_a_router_step_first_is_asked_ahead() -> None:
    found = first_route(demo(before=""), initial(ASK))
    assert found is not None
    assert found[1].query == ASK["query"]


class WatchingRouter:
    """Records, at each call, which steps the run had recorded (read from its checkpoint)."""

    engine: WorkflowEngine

    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    async def decide(
        self, call: CallContext, query: str, context: Mapping[str, Any], preference: str
    ) -> RouteDecision:
        view = await self.engine.get(call.tenant_id, call.run_id)
        self.seen.append([] if view is None else [s["step_id"] for s in view.steps])
        return RouteDecision("SLM_A", ("SLM_B", "LLM"), 0.9, "tracking", "dec-1")


@pytest.fixture
def watching(doubles: Doubles) -> WatchingRouter:
    router = WatchingRouter()
    ports = Ports(router, doubles.tools, doubles.models, doubles.knowledge, doubles.human)
    router.engine = WorkflowEngine(ports, InMemorySaver(), sleep=no_sleep, jitter=lambda: 0.5)
    return router


async def test_the_router_is_asked_once_before_the_input_gate_ran(
    workflows: dict[str, Workflow], doubles: Doubles, watching: WatchingRouter
) -> None:
    doubles.models.replies = {"SLM_A": SHIPPED}
    run = await watching.engine.start(
        workflows["tracking"], tenant_id="acme", run_id="a1", input=ASK
    )
    assert (run.status, run.answer, run.state["route"]["decision_id"]) == (
        "SUCCEEDED",
        SHIPPED,
        "dec-1",
    )
    assert len(watching.seen) == 1  # one call, read by the router step
    assert "request" not in watching.seen[0]  # asked before the input gate's turn
    assert [s["step_id"] for s in run.steps][:2] == ["request", "route"]


async def test_a_run_its_input_gate_fails_never_asks_the_router(
    workflows: dict[str, Workflow], watching: WatchingRouter
) -> None:
    run = await watching.engine.start(
        workflows["tracking"], tenant_id="acme", run_id="a2", input={"query": "Where is it?"}
    )
    assert run.status != "SUCCEEDED"
    assert watching.seen == []


async def test_a_failed_call_asked_ahead_is_retried_by_the_step(
    workflows: dict[str, Workflow], engine: WorkflowEngine, doubles: Doubles
) -> None:
    calls: list[str] = []

    async def flaky(
        call: CallContext, query: str, context: Mapping[str, Any], preference: str
    ) -> RouteDecision:
        calls.append(query)
        if len(calls) == 1:
            raise Unavailable("router restarting")
        return RouteDecision("SLM_A", ("SLM_B", "LLM"), 0.9, "tracking", "dec-2")

    doubles.ports.router.decide = flaky  # type: ignore[method-assign]
    doubles.models.replies = {"SLM_A": SHIPPED}
    run = await engine.start(workflows["tracking"], tenant_id="acme", run_id="a3", input=ASK)
    assert (run.status, run.state["route"]["decision_id"]) == ("SUCCEEDED", "dec-2")
    assert calls == [ASK["query"], ASK["query"]]
