"""Runs outlive the calls that start them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

from langgraph.checkpoint.memory import InMemorySaver
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import context
from services.orchestrator.runs import Runs, _detached
from services.orchestrator.store import RunRow
from services.orchestrator.workflow import (
    CallContext,
    Ports,
    RouteDecision,
    RunView,
    Workflow,
    WorkflowEngine,
)
from tests.unit.orchestrator.doubles import Doubles, no_sleep
from tests.unit.orchestrator.samples import ASK, SHIPPED


async def _current() -> context.CallContext | None:
    return context.current()


async def test_a_run_task_keeps_the_callers_identity_but_not_its_deadline() -> None:
    call = context.CallContext("req-1", "/x", time.monotonic() + 1, tenant_id="acme")
    token = context.bind(call)
    try:
        task = asyncio.create_task(_current(), context=_detached())
    finally:
        context.reset(token)
    found = await task
    assert found is not None
    assert (found.request_id, found.tenant_id, found.deadline) == ("req-1", "acme", None)


class _SlowRouter:
    """A router that answers after ``delay_s``, recording each call's start and end."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.started: list[str] = []
        self.cancelled: list[str] = []

    async def decide(
        self, call: CallContext, query: str, context_: Mapping[str, Any], preference: str
    ) -> RouteDecision:
        self.started.append(call.run_id)
        try:
            await asyncio.sleep(self.delay_s)
        except asyncio.CancelledError:
            self.cancelled.append(call.run_id)
            raise
        return RouteDecision("SLM_A", ("SLM_B", "LLM"), 0.9, "tracking", "dec-ahead")


def _runs(workflows: dict[str, Workflow], doubles: Doubles, router: _SlowRouter) -> Runs:
    ports = Ports(router, doubles.tools, doubles.models, doubles.knowledge, doubles.human)
    graph = WorkflowEngine(ports, InMemorySaver(), sleep=no_sleep, jitter=lambda: 0.5)
    tracking = workflows["tracking"]
    runs = Runs(
        engine=cast(AsyncEngine, None),  # begin and commit are replaced: no database
        workflows={tracking.name: {tracking.version: tracking}},
        graph=graph,
        wake=lambda: None,
    )

    async def commit(view: RunView, latency_ms: int, status: str = "") -> None:
        runs.hub.finish(view.run_id)

    runs.commit = commit  # type: ignore[method-assign]
    return runs


async def test_a_new_runs_router_call_overlaps_its_insert(
    workflows: dict[str, Workflow], doubles: Doubles
) -> None:
    router = _SlowRouter()
    runs = _runs(workflows, doubles, router)
    during_insert: list[list[str]] = []

    async def begin(*args: Any, run_id: str = "", **kwargs: Any) -> Any:
        await asyncio.sleep(0.01)  # the insert's round trips
        during_insert.append(list(router.started))
        return None, run_id, workflows["tracking"], datetime.now(UTC)

    runs.begin = begin  # type: ignore[method-assign]
    doubles.models.replies = {"SLM_A": SHIPPED}
    run_id, view = await runs.run("acme", "tracking", "", ASK, request_id="r1", user_id="u1")
    assert view is not None
    assert (view.status, view.state["route"]["decision_id"]) == ("SUCCEEDED", "dec-ahead")
    assert during_insert == [[run_id]]  # asked while the row was being written
    assert router.started == [run_id]  # and only then


async def test_a_retried_request_drops_the_call_asked_for_it(
    workflows: dict[str, Workflow], doubles: Doubles
) -> None:
    router = _SlowRouter(delay_s=30.0)
    runs = _runs(workflows, doubles, router)
    now = datetime.now(UTC)
    earlier = RunRow(
        run_id="run-1", workflow="tracking", version=workflows["tracking"].version,
        status="SUCCEEDED", input=dict(ASK), output={}, metrics={}, request_id="r1",
        session_id="", user_id="u1", decision_id="", created_at=now, started_at=now,
        completed_at=now, updated_at=now,
    )  # fmt: skip

    async def begin(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.01)
        return earlier, earlier.run_id, workflows["tracking"], now

    runs.begin = begin  # type: ignore[method-assign]
    run_id, task = await runs.start("acme", "tracking", "", ASK, request_id="r1", user_id="u1")
    assert (run_id, task) == ("run-1", None)
    await asyncio.sleep(0.01)
    assert len(router.started) == 1
    assert router.cancelled == router.started  # the call for the id never used was stopped


async def test_a_requested_event_for_a_run_driven_here_asks_no_database(
    workflows: dict[str, Workflow], doubles: Doubles
) -> None:
    runs = _runs(workflows, doubles, _SlowRouter())

    async def begin(*args: Any, run_id: str = "", **kwargs: Any) -> Any:
        return None, run_id, workflows["tracking"], datetime.now(UTC)

    recovered: list[tuple[str, str]] = []

    async def recover(tenant_id: str, run_id: str) -> None:
        recovered.append((tenant_id, run_id))

    runs.begin = begin  # type: ignore[method-assign]
    runs.recover = recover  # type: ignore[method-assign]
    doubles.models.replies = {"SLM_A": SHIPPED}
    run_id, task = await runs.start("acme", "tracking", "", ASK, request_id="r1", user_id="u1")
    assert task is not None
    await runs.requested("acme", run_id)  # while it runs
    await task
    await runs.requested("acme", run_id)  # just after it ended
    assert recovered == []
    await runs.requested("acme", "run-elsewhere")  # started by another orchestrator
    assert recovered == [("acme", "run-elsewhere")]
