"""The service layer's entry point: start, resume and read durable runs of a workflow.

Durability. The graph is compiled once per engine (the topology is fixed; the workflow and
its version travel in the runtime context), and runs with LangGraph's ``sync`` durability
through a :class:`~services.orchestrator.workflow.durability.DeferredCheckpointer`: every
super-step is checkpointed before the next starts, but a checkpoint reaches PostgreSQL only

1. before a side effect is requested (a side-effecting tool call, a compensation, a hand-off
   to a human: the node awaits ``WorkflowContext.durable`` first),
2. as soon as it records a side effect that happened (the ``completed`` and
   ``compensations`` saga entries, :data:`~services.orchestrator.workflow.state.EFFECT_KEYS`),
3. when an invocation ends (finished, waiting for a human, paused), before it returns.

What that guarantees after a crash, whenever it strikes:

- A side effect's request always follows a durable checkpoint of the state that chose it
  and its arguments, so recovery reaches the same step with the same inputs and replays the
  call under the same idempotency key: never a second charge, order or email. Tool calls
  are at-least-once towards the provider and exactly-once in effect, as before.
- A side effect that completed is durable before the next one is requested (rule 1, and
  rule 2 makes it durable at once), so the saga never forgets a compensation it owes, and
  compensations themselves run one per checkpointed super-step.
- Only read-only work since the last durable checkpoint (router decision, read-only tools,
  model calls, gates, repair decisions) can be lost; recovery re-runs it. Nothing outside
  the run acted on it: its ``tool.call.*`` events carry ids derived from the idempotency
  key, so re-written ones are dropped as duplicates. A crash before the first durable
  checkpoint leaves no checkpoint at all, and the run starts again from its input (its
  idempotency keys are derived from the run's start time, which the run row keeps).
- The outcome the caller records (``RunView``) is read after the final flush, so a run is
  never reported finished with a state that is not stored.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from langgraph.types import Command

from services.kit.errors import FailedPrecondition, InvalidArgument, NotFound
from services.orchestrator.workflow.ahead import Ahead, first_route
from services.orchestrator.workflow.calls import call_context
from services.orchestrator.workflow.context import WorkflowContext
from services.orchestrator.workflow.durability import DeferredCheckpointer
from services.orchestrator.workflow.graph import RunGraph, build_graph
from services.orchestrator.workflow.human import invalid_human_input
from services.orchestrator.workflow.model import TIERS, Workflow
from services.orchestrator.workflow.ports import Ports
from services.orchestrator.workflow.state import (
    EFFECT_KEYS,
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


def _started(saved: CheckpointTuple | None) -> bool:
    """Whether a checkpoint is past the run's input (its first node ran)."""
    return saved is not None and int(saved.metadata.get("step", -1)) >= 0


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
        self._saver = DeferredCheckpointer(checkpointer, EFFECT_KEYS)
        self.graph: RunGraph = build_graph(self._saver)
        self._sleep, self._clock, self._jitter = sleep, clock, jitter
        self._ahead: dict[str, Ahead] = {}  # thread → its router call under way

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
        saved = await self._saved(tenant_id, run_id)
        if _started(saved):
            existing = await self.get(tenant_id, run_id)
            assert existing is not None
            return existing
        return await self._begin(workflow, tenant_id, run_id, saved, input, user_id, started_at)

    async def _begin(
        self,
        workflow: Workflow,
        tenant_id: str,
        run_id: str,
        saved: CheckpointTuple | None,
        input: Mapping[str, Any],
        user_id: str,
        started_at: datetime | None,
    ) -> RunView:
        if saved is not None:
            # Only the input checkpoint a crash left before the first node ran: no step has
            # had any effect yet, so the thread starts over.
            await self._saver.adelete_thread(thread_id(tenant_id, run_id))
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
        if thread_id(tenant_id, run_id) not in self._ahead:
            self._ask_ahead(workflow, thread_id(tenant_id, run_id), initial)
        return await self._invoke(workflow, tenant_id, run_id, initial, fresh=True)

    def ask_ahead(
        self,
        workflow: Workflow,
        *,
        tenant_id: str,
        run_id: str,
        input: Mapping[str, Any],
        user_id: str = "",
        context: contextvars.Context | None = None,
    ) -> None:
        """Start the first router call of a run about to be created (see ``ahead``).

        For a caller that writes the run's row first: the call overlaps that write. The
        run's start takes it; :meth:`drop_ahead` when the run is not started after all.
        ``context``: the one the run will run in (the call is made in it).
        """
        initial: RunState = {
            "tenant_id": tenant_id, "run_id": run_id, "user_id": user_id, "input": dict(input),
        }  # fmt: skip
        self._ask_ahead(workflow, thread_id(tenant_id, run_id), initial, context)

    def drop_ahead(self, tenant_id: str, run_id: str) -> None:
        """Forget the router call asked for a run that will not start here."""
        unread = self._ahead.pop(thread_id(tenant_id, run_id), None)
        if unread is not None:
            unread.drop()

    def _ask_ahead(
        self,
        workflow: Workflow,
        thread: str,
        initial: RunState,
        context: contextvars.Context | None = None,
    ) -> None:
        """Start the run's first router call now, when it is certain (see ``ahead``)."""
        found = first_route(workflow, initial)
        if found is None:
            return
        step, ask = found
        call = call_context(initial, self.context(workflow), step)
        decision = asyncio.create_task(
            self.ports.router.decide(call, ask.query, ask.context, ask.preference),
            context=context,
        )
        self._ahead[thread] = Ahead(ask, decision)

    def _take_ahead(self, thread: str) -> Ahead | None:
        return self._ahead.pop(thread, None)

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
        """Continue a run a crash left between steps, from its last durable checkpoint."""
        snapshot = await self.graph.aget_state(run_config(tenant_id, run_id, workflow))
        if not snapshot.values:
            raise NotFound(f"run {run_id} not found")
        view = RunView.of(cast(RunState, snapshot.values))
        if view.workflow:
            # A crash during the first super-step leaves only the input checkpoint, unpinned.
            self._check_pinned(view, workflow)
        if not snapshot.next or snapshot.interrupts:
            return view
        return await self._invoke(workflow, tenant_id, run_id, None)

    async def advance(
        self,
        workflow: Workflow,
        *,
        tenant_id: str,
        run_id: str,
        input: Mapping[str, Any],
        user_id: str = "",
        started_at: datetime | None = None,
        new: bool = False,
    ) -> RunView:
        """Start the run, or recover it if it has started: one read decides which.

        ``new``: the caller has just created the run, so it has no checkpoint to read.
        """
        saved = None if new else await self._saved(tenant_id, run_id)
        if _started(saved):
            return await self.recover(workflow, tenant_id=tenant_id, run_id=run_id)
        return await self._begin(workflow, tenant_id, run_id, saved, input, user_id, started_at)

    async def started(self, tenant_id: str, run_id: str) -> bool:
        """Whether the run has a checkpoint past its input (its first node ran)."""
        return _started(await self._saved(tenant_id, run_id))

    async def _saved(self, tenant_id: str, run_id: str) -> CheckpointTuple | None:
        """The run's newest checkpoint (held in memory while it runs here, else stored)."""
        config: RunnableConfig = {"configurable": {"thread_id": thread_id(tenant_id, run_id)}}
        return await self._saver.aget_tuple(config)

    async def get(self, tenant_id: str, run_id: str) -> RunView | None:
        """The run's current view, or None when there is no such run."""
        config: RunnableConfig = {"configurable": {"thread_id": thread_id(tenant_id, run_id)}}
        snapshot = await self.graph.aget_state(config)
        return RunView.of(cast(RunState, snapshot.values)) if snapshot.values else None

    async def _pinned(self, workflow: Workflow, tenant_id: str, run_id: str) -> RunView:
        view = await self.get(tenant_id, run_id)
        if view is None:
            raise NotFound(f"run {run_id} not found")
        self._check_pinned(view, workflow)
        return view

    @staticmethod
    def _check_pinned(view: RunView, workflow: Workflow) -> None:
        if (view.workflow, view.version) != (workflow.name, workflow.version):
            raise FailedPrecondition(
                f"run {view.run_id} runs {view.workflow} {view.version}, not "
                f"{workflow.name} {workflow.version}"
            )

    async def _invoke(
        self,
        workflow: Workflow,
        tenant_id: str,
        run_id: str,
        payload: RunState | Command[Any] | None,
        *,
        fresh: bool = False,
    ) -> RunView:
        """Run the graph with the thread held, then store its end; ``fresh``: no checkpoint yet."""
        config = run_config(tenant_id, run_id, workflow)
        thread = thread_id(tenant_id, run_id)
        context = replace(
            self.context(workflow),
            durable=partial(self._saver.flush, thread),
            ahead=partial(self._take_ahead, thread),
        )
        self._saver.hold(thread, empty=fresh)
        try:
            # "sync": each super-step's checkpoint is taken before the next step starts; the
            # held thread decides which of them are written (see the module docstring).
            await self.graph.ainvoke(payload, config, context=context, durability="sync")
            await self._saver.flush(thread)
            view = await self.get(tenant_id, run_id)
        finally:
            # After a failure whatever was not flushed is dropped, as a crash would drop it.
            self._saver.release(thread)
            self.drop_ahead(tenant_id, run_id)
        assert view is not None
        return view
