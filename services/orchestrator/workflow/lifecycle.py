"""Plan and Commit: the first and last node of every run."""

from __future__ import annotations

from langgraph.runtime import Runtime

from services.orchestrator.workflow.context import WorkflowContext
from services.orchestrator.workflow.state import RunState, RunStatus, scope


async def plan(state: RunState, runtime: Runtime[WorkflowContext]) -> RunState:
    """Plan: pin the workflow version and start every counter at zero."""
    workflow = runtime.context.workflow
    return {
        "workflow": workflow.name,
        "version": workflow.version,
        "status": "RUNNING",
        "reason": "",
        "message": "",
        "cursor": 0,
        "failure": None,
        "resolution": "",
        "route": {},
        "tier": "",
        "escalations": 0,
        "retries": {},
        "passages": [],
        "tokens": 0,
        "cost_usd": 0.0,
        "answer": "",
        "degraded": False,
        "human_request": None,
        "human_error": "",
        "citations": [],
    }


async def commit(state: RunState, runtime: Runtime[WorkflowContext]) -> RunState:
    """Commit: settle the final status, the answer and the structured output."""
    workflow = runtime.context.workflow
    status: RunStatus = state.get("status", "RUNNING")
    if status == "COMPENSATING":
        undone = all(r["status"] == "COMPENSATED" for r in state.get("compensations", []))
        status = "COMPENSATED" if undone else "FAILED"
    elif status == "RUNNING":
        status = "SUCCEEDED"
    if status != "SUCCEEDED":
        # The answer of a failed run may be unchecked or wrong; the customer gets the graceful one.
        return {
            "status": status,
            "answer": workflow.fallback.failure_message,
            "citations": [],
            "output": {},
            "human_request": None,
        }
    output = workflow.output.render(scope(state)) if workflow.output else {}
    return {
        "status": status,
        "output": output if isinstance(output, dict) else {"value": output},
        "human_request": None,
    }
