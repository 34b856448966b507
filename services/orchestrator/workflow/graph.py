"""The run graph, assembled in one place: Plan → Route → Work → Verify → Repair → Commit.

The topology is fixed and the workflow travels in the runtime context: each YAML step is
dispatched to the node for its type, one step per super-step, so every step ends in a
checkpoint (held in memory or stored, see :mod:`services.orchestrator.workflow.engine`) and
routers can be typed ``Literal``s. A run resumes under the workflow version pinned in
its state, whatever the graph was compiled with, so the graph is compiled once per engine.

Routers are coroutines: LangGraph runs a plain function router on a worker thread from an
async graph, and that hand-off cost more than the routing itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime

from services.orchestrator.workflow.context import WorkflowContext
from services.orchestrator.workflow.gates import verify
from services.orchestrator.workflow.human import await_human, escalate
from services.orchestrator.workflow.lifecycle import commit, plan
from services.orchestrator.workflow.recovery import compensate, fallback, repair
from services.orchestrator.workflow.state import RunState, pending_compensations
from services.orchestrator.workflow.work import route, work

StepNode = Literal["route", "work", "verify", "escalate"]
Next = Literal["route", "work", "verify", "escalate", "repair", "commit"]
RunGraph = CompiledStateGraph[RunState, WorkflowContext, RunState, RunState]

_NODE_FOR: Mapping[str, StepNode] = {
    "router": "route",
    "tool": "work",
    "llm": "work",
    "condition": "work",
    "escalation": "escalate",
    "gate": "verify",
}


def _next(state: RunState, runtime: Runtime[WorkflowContext]) -> Next:
    """Repair after a failure, else the node for the step at the cursor, else Commit."""
    if state.get("failure"):
        return "repair"
    steps = runtime.context.workflow.steps
    cursor = state.get("cursor", 0)
    if cursor >= len(steps):
        return "commit"
    return _NODE_FOR[steps[cursor].kind]


async def next_step(state: RunState, runtime: Runtime[WorkflowContext]) -> Next:
    """Repair after a failure, else the node for the step at the cursor, else Commit."""
    return _next(state, runtime)


async def after_escalate(
    state: RunState, runtime: Runtime[WorkflowContext]
) -> Literal[Next, "await_human"]:
    """Wait for the human once the hand-off is queued; a skipped escalation moves on."""
    if state.get("status") == "WAITING_FOR_HUMAN" and state.get("human_request"):
        return "await_human"
    return _next(state, runtime)


async def after_human(
    state: RunState, runtime: Runtime[WorkflowContext]
) -> Literal[Next, "await_human"]:
    """Ask again when the human's input was rejected."""
    if state.get("human_error"):
        return "await_human"
    return _next(state, runtime)


async def after_repair(
    state: RunState, runtime: Runtime[WorkflowContext]
) -> Literal[Next, "fallback", "compensate"]:
    """Follow Repair's decision."""
    resolution = state.get("resolution")
    if resolution == "fallback":
        return "fallback"
    if resolution == "compensate":
        return "compensate" if pending_compensations(state) else "commit"
    return _next(state, runtime)


async def after_compensate(state: RunState) -> Literal["compensate", "commit"]:
    """Undo side effects one at a time until none is left."""
    return "compensate" if pending_compensations(state) else "commit"


def build_graph(checkpointer: BaseCheckpointSaver[Any] | None = None) -> RunGraph:
    """The compiled run graph; pass the checkpointer that makes runs durable."""
    graph = StateGraph(RunState, context_schema=WorkflowContext)
    graph.add_node("plan", plan)
    graph.add_node("route", route)
    graph.add_node("work", work)
    graph.add_node("verify", verify)
    graph.add_node("escalate", escalate)
    graph.add_node("await_human", await_human)
    graph.add_node("repair", repair)
    graph.add_node("fallback", fallback)
    graph.add_node("compensate", compensate)
    graph.add_node("commit", commit)
    graph.add_edge(START, "plan")
    for node in ("plan", "route", "work", "verify", "fallback"):
        graph.add_conditional_edges(node, next_step)
    graph.add_conditional_edges("escalate", after_escalate)
    graph.add_conditional_edges("await_human", after_human)
    graph.add_conditional_edges("repair", after_repair)
    graph.add_conditional_edges("compensate", after_compensate)
    graph.add_edge("commit", END)
    return graph.compile(checkpointer=checkpointer, name="supportmesh-workflow")
