"""The service layer's entry point: start, resume and read durable runs of a workflow."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.types import Command

from services.kit.errors import FailedPrecondition, InvalidArgument, NotFound
from services.orchestrator.workflow.context import WorkflowContext
from services.orchestrator.workflow.graph import RunGraph, build_graph
from services.orchestrator.workflow.human import invalid_human_input
from services.orchestrator.workflow.model import TIERS, Workflow
from services.orchestrator.workflow.ports import Ports
from services.orchestrator.workflow.state import (
    CompensationResult,
    CompletedStep,
    HumanHandoff,
    RunState,
    StepRecord,
)


def thread_id(tenant_id: str, run_id: str) -> str:
    """The checkpoint thread of a run; it carries the tenant, since checkpoint tables do not."""
    return f"{tenant_id}:{run_id}"


def run_config(tenant_id: str, run_id: str, workflow: Workflow) -> RunnableConfig:
    """The LangGraph config of a run, with a step limit no legitimate run reaches."""
    # Each step runs at most once plus one repair per tier and per retry; compensations and
    # bookkeeping nodes add a few more super-steps.
    per_step = 2 * (2 + len(TIERS) + workflow.retry.max_attempts)
    limit = 10 + len(workflow.steps) * per_step
    return {"configurable": {"thread_id": thread_id(tenant_id, run_id)}, "recursion_limit": limit}


@dataclass(frozen=True)
class RunView:
    """A run as the service reports it, read from the checkpointed state."""

    tenant_id: str
    run_id: str
    workflow: str
    version: str
    status: str
    reason: str
    message: str
    answer: str
    degraded: bool
    tier: str
    tokens: int
    cost_usd: float
    steps: tuple[StepRecord, ...]
    completed: tuple[CompletedStep, ...]
    compensations: tuple[CompensationResult, ...]
    human_request: HumanHandoff | None
    output: Mapping[str, Any]
    citations: tuple[Mapping[str, Any], ...]
    state: RunState  # the whole state, for anything not surfaced above

    @classmethod
    def of(cls, state: RunState) -> RunView:
        """The view of a run's state."""
        return cls(
            tenant_id=state.get("tenant_id", ""),
            run_id=state.get("run_id", ""),
            workflow=state.get("workflow", ""),
            version=state.get("version", ""),
            status=state.get("status", "RUNNING"),
            reason=state.get("reason", ""),
            message=state.get("message", ""),
            answer=state.get("answer", ""),
            degraded=state.get("degraded", False),
            tier=state.get("tier", ""),
            tokens=state.get("tokens", 0),
            cost_usd=state.get("cost_usd", 0.0),
            steps=tuple(state.get("steps", [])),
            completed=tuple(state.get("completed", [])),
            compensations=tuple(state.get("compensations", [])),
            human_request=state.get("human_request"),
            output=state.get("output", {}),
            citations=tuple(state.get("citations", [])),
            state=state,
        )


class WorkflowEngine:
    """Runs workflows as checkpointed LangGraph runs, one thread per ``tenant:run``."""

    def __init__(
        self,
        ports: Ports,
        checkpointer: BaseCheckpointSaver[Any],
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        """Compile the graph once; ``checkpointer`` is MemorySaver in tests, Postgres in prod."""
        self.ports = ports
        self.graph: RunGraph = build_graph(checkpointer)
        self._checkpointer = checkpointer
        self._sleep, self._clock, self._jitter = sleep, clock, jitter

    def context(self, workflow: Workflow) -> WorkflowContext:
        """The runtime context for runs of ``workflow`` (for callers streaming the graph)."""
        return WorkflowContext(workflow, self.ports, self._sleep, self._clock, self._jitter)

    async def start(
        self,
        workflow: Workflow,
        *,
        tenant_id: str,
        run_id: str,
        input: Mapping[str, Any],
        user_id: str = "",
        started_at: datetime | None = None,
    ) -> RunView:
        """Run ``workflow`` until it ends or waits for a human; a known run id is not rerun."""
        existing = await self.get(tenant_id, run_id)
        if existing is not None and await self.started(tenant_id, run_id):
            return existing
        thread = thread_id(tenant_id, run_id)
        if await self._checkpointer.aget_tuple({"configurable": {"thread_id": thread}}):
            # Only the input checkpoint a crash left before the first node ran: no step has
            # had any effect yet, so the thread starts over.
            await self._checkpointer.adelete_thread(thread)
        began = started_at or datetime.now(UTC)
        initial: RunState = {
            "tenant_id": tenant_id,
            "run_id": run_id,
            "user_id": user_id,
            "workflow": workflow.name,
            "version": workflow.version,
            "started_at": began.isoformat(),
            "input": dict(input),
        }
        return await self._invoke(workflow, tenant_id, run_id, initial)

    async def resume(
        self,
        workflow: Workflow,
        *,
        tenant_id: str,
        run_id: str,
        step_id: str,
        value: Mapping[str, Any],
    ) -> RunView:
        """Give a waiting run the human's input and run it on."""
        view = await self._pinned(workflow, tenant_id, run_id)
        waiting = view.human_request
        if view.status != "WAITING_FOR_HUMAN" or waiting is None:
            raise FailedPrecondition(f"run {run_id} is {view.status}, not waiting for a human")
        if waiting["step_id"] != step_id:
            raise FailedPrecondition(f"run {run_id} waits at step '{waiting['step_id']}'")
        problem = invalid_human_input(value, waiting["input_schema"])
        if problem:
            raise InvalidArgument(f"human input: {problem}", field="input")
        return await self._invoke(workflow, tenant_id, run_id, Command(resume=dict(value)))

    async def recover(self, workflow: Workflow, *, tenant_id: str, run_id: str) -> RunView:
        """Continue a run a crash left between steps, from its last checkpoint."""
        view = await self.get(tenant_id, run_id)
        if view is None:
            raise NotFound(f"run {run_id} not found")
        if view.workflow:
            # A crash during the first super-step leaves only the input checkpoint, unpinned.
            view = await self._pinned(workflow, tenant_id, run_id)
        snapshot = await self.graph.aget_state(run_config(tenant_id, run_id, workflow))
        if not snapshot.next or snapshot.interrupts:
            return view
        return await self._invoke(workflow, tenant_id, run_id, None)

    async def started(self, tenant_id: str, run_id: str) -> bool:
        """Whether the run has a checkpoint past its input (its first node ran)."""
        config: RunnableConfig = {"configurable": {"thread_id": thread_id(tenant_id, run_id)}}
        snapshot = await self.graph.aget_state(config)
        metadata = snapshot.metadata
        return metadata is not None and int(metadata.get("step", -1)) >= 0

    async def get(self, tenant_id: str, run_id: str) -> RunView | None:
        """The run's current view, or None when there is no such run."""
        config: RunnableConfig = {"configurable": {"thread_id": thread_id(tenant_id, run_id)}}
        snapshot = await self.graph.aget_state(config)
        return RunView.of(cast(RunState, snapshot.values)) if snapshot.values else None

    async def _pinned(self, workflow: Workflow, tenant_id: str, run_id: str) -> RunView:
        view = await self.get(tenant_id, run_id)
        if view is None:
            raise NotFound(f"run {run_id} not found")
        if (view.workflow, view.version) != (workflow.name, workflow.version):
            raise FailedPrecondition(
                f"run {run_id} runs {view.workflow} {view.version}, not "
                f"{workflow.name} {workflow.version}"
            )
        return view

    async def _invoke(
        self,
        workflow: Workflow,
        tenant_id: str,
        run_id: str,
        payload: RunState | Command[Any] | None,
    ) -> RunView:
        config = run_config(tenant_id, run_id, workflow)
        # "sync" durability: a step's checkpoint is written before the next step starts, so a
        # crash never forgets a side effect that already happened.
        await self.graph.ainvoke(payload, config, context=self.context(workflow), durability="sync")
        view = await self.get(tenant_id, run_id)
        assert view is not None
        return view
