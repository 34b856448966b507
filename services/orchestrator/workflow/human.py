"""Escalation to a human: hand off, then pause with ``interrupt()`` until the run is resumed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from services.orchestrator.workflow import model
from services.orchestrator.workflow.calls import (
    Meter,
    call_context,
    guarded,
    idempotency_key,
    record,
    with_retries,
)
from services.orchestrator.workflow.context import WorkflowContext
from services.orchestrator.workflow.ports import HumanRequest
from services.orchestrator.workflow.state import HumanHandoff, RunState, scope
from services.orchestrator.workflow.work import as_text, current

# The operation name in hand-off idempotency keys (hand-offs are not registry tools).
HAND_OFF = "human.hand_off"


async def escalate(state: RunState, runtime: Runtime[WorkflowContext]) -> RunState:
    """Escalate: queue the run for a human and mark it WAITING_FOR_HUMAN."""
    # The hand-off and the wait are separate nodes because LangGraph re-runs an interrupted
    # node from its start on resume, and the ticket must not be queued twice.
    ctx = runtime.context
    step = current(state, ctx)
    assert isinstance(step, model.EscalationStep)

    async def body(meter: Meter) -> RunState:
        values = scope(state)
        schema = dict(step.input_schema) if step.input_schema is not None else None
        request = HumanRequest(
            step_id=step.id,
            queue=step.queue,
            prompt=as_text(step.prompt.render(values)),
            channels=step.channels,
            input_schema=schema,
            context={
                "query": values["query"],
                "answer": state.get("answer", ""),
                "reason": state.get("reason", ""),
                "intent": values["intent"],
            },
        )
        call = call_context(state, ctx, step)
        key = idempotency_key(state, HAND_OFF, step.id)
        await ctx.durable()  # a hand-off is a side effect: the state before it is stored
        ticket = await with_retries(
            ctx, meter, lambda _: ctx.ports.human.hand_off(call, request, key)
        )
        meter.status = "WAITING_FOR_HUMAN"
        handoff = HumanHandoff(
            step_id=step.id,
            queue=step.queue,
            prompt=request.prompt,
            channels=list(step.channels),
            input_schema=schema,
            ticket=ticket,
        )
        return {"status": "WAITING_FOR_HUMAN", "human_request": handoff, "human_error": ""}

    return await guarded(step, state, ctx, body)


async def await_human(state: RunState, runtime: Runtime[WorkflowContext]) -> RunState:
    """Wait for the human: the run pauses here until resumed with ``Command(resume=input)``."""
    workflow = runtime.context.workflow
    handoff = state.get("human_request")
    assert handoff is not None
    value = interrupt(dict(handoff), response_schema=handoff["input_schema"])
    problem = invalid_human_input(value, handoff["input_schema"])
    if problem:
        return {"human_error": problem}
    step = workflow.step(handoff["step_id"])
    update: RunState = {
        "status": "RUNNING",
        "human_request": None,
        "human_error": "",
        "outputs": {step.id: dict(value)},
        "cursor": workflow.following(step),
        "steps": [record(step, "SUCCEEDED")],
    }
    if isinstance(value.get("answer"), str) and value["answer"]:
        update.update({"answer": value["answer"], "degraded": False, "citations": []})
    return update


def invalid_human_input(value: Any, schema: Mapping[str, Any] | None) -> str:
    """Why ``value`` is not acceptable human input, or empty when it is."""
    if not isinstance(value, Mapping):
        return "the human input must be an object"
    if schema is None:
        return ""
    error = next(iter(Draft202012Validator(dict(schema)).iter_errors(dict(value))), None)
    return "" if error is None else error.message
