"""Repair, Fallback and Compensate: what a run does after a step or gate fails."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Literal

from langgraph.runtime import Runtime

from services.orchestrator.workflow import model
from services.orchestrator.workflow.calls import Meter, StepFailed, observed, record, with_retries
from services.orchestrator.workflow.context import WorkflowContext
from services.orchestrator.workflow.ports import CallContext, ToolEvent
from services.orchestrator.workflow.state import (
    CompensationResult,
    RunState,
    pending_compensations,
)


async def repair(state: RunState, runtime: Runtime[WorkflowContext]) -> RunState:
    """Repair: escalate to the next tier, retry, or apply the failed step's on_failure."""
    workflow = runtime.context.workflow
    failure = state.get("failure")
    assert failure is not None
    step = workflow.step(failure["step_id"])
    reason, message = failure["reason"], failure["message"]
    log: dict[str, Any] = {"step_id": step.id, "reason": reason, "message": message}
    redo = _redo_target(step, failure["kind"], workflow)
    # Once the budget is spent, another tier or attempt would only spend more.
    if redo is not None and reason != "BUDGET_EXCEEDED":
        path = state.get("route", {}).get("escalation_path", [])
        used = state.get("escalations", 0)
        if redo.tier is None and used < len(path):
            tier = path[used]
            return {
                "failure": None,
                "resolution": "escalate",
                "tier": tier,
                "escalations": used + 1,
                "cursor": workflow.index(redo.id),
                "repairs": [{**log, "action": "escalate", "from": state.get("tier"), "to": tier}],
            }
        retries = state.get("retries", {})
        done = retries.get(redo.id, 0)
        if failure["kind"] == "gate" and done < workflow.retry.max_attempts - 1:
            return {
                "failure": None,
                "resolution": "retry",
                "retries": {**retries, redo.id: done + 1},
                "cursor": workflow.index(redo.id),
                "repairs": [{**log, "action": "retry"}],
            }
    action = step.on_failure
    if reason == "BUDGET_EXCEEDED":
        action = model.OnFailure("compensate")  # nothing useful can run without budget
    update: RunState = {
        "failure": None,
        "resolution": action.action,
        "repairs": [{**log, "action": action.action}],
    }
    if action.action == "continue":
        # The run goes on, but a customer-facing answer that failed its gate is flagged.
        degraded = state.get("degraded", False) or _answer_failed(step, failure["kind"], workflow)
        return {
            **update,
            "cursor": workflow.following(step),
            "degraded": degraded,
            "reason": reason if degraded else state.get("reason", ""),
        }
    if action.action == "goto" and action.target is not None:
        return {**update, "cursor": workflow.index(action.target)}
    update.update({"reason": reason, "message": message})
    if action.action == "compensate":
        update["status"] = "COMPENSATING" if pending_compensations(state) else "FAILED"
    return update


def _answer_failed(step: model.Step, kind: str, workflow: model.Workflow) -> bool:
    """Whether the failure leaves the customer-facing answer unchecked or missing."""
    target = _redo_target(step, kind, workflow)
    return target is not None and target.answer


def _redo_target(step: model.Step, kind: str, workflow: model.Workflow) -> model.LlmStep | None:
    """The model step a failure can be repaired by re-running, if any."""
    if isinstance(step, model.LlmStep):
        return step
    if kind == "gate" and isinstance(step, model.GateStep) and step.target != model.INPUT:
        target = workflow.step(step.target)
        return target if isinstance(target, model.LlmStep) else None
    return None


async def fallback(state: RunState, runtime: Runtime[WorkflowContext]) -> RunState:
    """Fallback: hand off to the workflow's escalation step, or answer generically."""
    workflow = runtime.context.workflow
    chosen = workflow.fallback
    failed_at = workflow.index(state.get("repairs", [{}])[-1].get("step_id", model.END))
    if chosen.action == "escalate" and chosen.step is not None:
        target = workflow.index(chosen.step)
        # Never jump back to a hand-off that already ran or failed: that could loop.
        if target > failed_at:
            return {"cursor": target, "degraded": True}
    return {
        "answer": chosen.message,
        "degraded": True,
        "citations": [],
        "cursor": len(workflow.steps),
    }


async def compensate(state: RunState, runtime: Runtime[WorkflowContext]) -> RunState:
    """Compensate: undo the most recent side effect that is not undone yet."""
    # One compensation per super-step, so each is checkpointed before the next begins.
    ctx = runtime.context
    pending = pending_compensations(state)
    if not pending:
        return {}
    entry = pending[0]
    plan = entry["compensation"]
    assert plan is not None
    step = ctx.workflow.step(entry["step_id"])
    call = CallContext(
        tenant_id=state["tenant_id"],
        run_id=state["run_id"],
        user_id=state.get("user_id", ""),
        workflow=ctx.workflow.name,
        step_id=step.id,
        deadline=ctx.clock() + step.wall_ms / 1000,
    )
    key = plan["idempotency_key"]

    async def attempt(number: int) -> dict[str, Any]:
        event = ToolEvent(
            "requested", plan["tool"], step.id, key, number, plan["input"], compensates=step.id
        )

        async def undo() -> Mapping[str, Any]:
            return await ctx.ports.tools.call(call, plan["tool"], plan["input"], key)

        return await observed(ctx, call, event, undo, done="compensated")

    meter = Meter()
    status: Literal["COMPENSATED", "FAILED"] = "COMPENSATED"
    reason = text = ""
    await ctx.durable()  # the saga record this undo is owed by is stored before it starts
    try:
        async with asyncio.timeout(step.wall_ms / 1000):
            await with_retries(ctx, meter, attempt)
    except StepFailed as failed:
        status, reason, text = "FAILED", failed.reason, failed.message
    except TimeoutError:
        status, reason, text = "FAILED", "TIMEOUT", f"ran past its {step.wall_ms} ms budget"
    # A compensation that keeps failing is left for an operator: the run ends FAILED and
    # the record says which step is still in effect.
    result = CompensationResult(step_id=step.id, tool=plan["tool"], status=status, message=text)
    entry_record = record(step, status, meter, reason=reason, message=text)
    return {"compensations": [result], "steps": [entry_record], "status": "COMPENSATING"}
