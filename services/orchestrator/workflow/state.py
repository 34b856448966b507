"""The checkpointed state of a run: plain JSON data, so any checkpointer can persist it."""

import operator
from typing import Annotated, Any, Literal, TypedDict

RunStatus = Literal[
    "RUNNING", "WAITING_FOR_HUMAN", "SUCCEEDED", "FAILED", "COMPENSATING", "COMPENSATED"
]
StepStatus = Literal["SUCCEEDED", "FAILED", "SKIPPED", "WAITING_FOR_HUMAN", "COMPENSATED"]


def merge(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    """Reducer for step outputs: a later write of the same step replaces the earlier one."""
    return {**left, **right}


class Failure(TypedDict):
    """A failed step or gate waiting for Repair."""

    kind: Literal["step", "gate"]
    step_id: str
    reason: str  # an ErrorReason wire name: VALIDATION_FAILED, TIMEOUT, BUDGET_EXCEEDED, …
    message: str


class StepRecord(TypedDict):
    """One executed (or skipped) step, as the service reports it in ``Run.steps``."""

    step_id: str
    type: str
    tool: str
    status: StepStatus
    tier: str
    tokens: int
    cost_usd: float
    latency_ms: int
    attempts: int
    reason: str
    message: str


class CompensationPlan(TypedDict):
    """The call that undoes a completed step, resolved when the step succeeded."""

    tool: str
    input: dict[str, Any]
    idempotency_key: str


class CompletedStep(TypedDict):
    """The saga record of a tool step that succeeded with a side effect."""

    step_id: str
    tool: str
    side_effect: str
    idempotency_key: str
    input: dict[str, Any]
    output: dict[str, Any]
    compensation: CompensationPlan | None  # None: irreversible with nothing declared


class CompensationResult(TypedDict):
    """The outcome of one compensation."""

    step_id: str
    tool: str
    status: Literal["COMPENSATED", "FAILED"]
    message: str


class GateResult(TypedDict):
    """One validator's verdict."""

    step_id: str
    target: str
    validator: str
    passed: bool
    skipped: bool
    score: float | None
    detail: str
    tier: str


class HumanHandoff(TypedDict):
    """What a run waiting for a human needs (the proto's HumanInputRequest plus the ticket)."""

    step_id: str
    queue: str
    prompt: str
    channels: list[str]
    input_schema: dict[str, Any] | None
    ticket: str


class RunState(TypedDict, total=False):
    """A run's state; nodes return the keys they change."""

    tenant_id: str
    run_id: str
    user_id: str
    workflow: str
    version: str
    started_at: str  # ISO-8601 UTC, part of every idempotency key
    input: dict[str, Any]
    status: RunStatus
    reason: str  # ErrorReason wire name when the run failed or answered degraded
    message: str
    cursor: int  # index of the next step
    failure: Failure | None
    resolution: str  # Repair's last decision
    route: dict[str, Any]  # the RouteDecision
    tier: str
    escalations: int  # tiers tried beyond the router's first choice
    retries: dict[str, int]  # Repair retries per step
    outputs: Annotated[dict[str, Any], merge]
    passages: list[dict[str, Any]]
    steps: Annotated[list[StepRecord], operator.add]
    gates: Annotated[list[GateResult], operator.add]
    repairs: Annotated[list[dict[str, Any]], operator.add]
    completed: Annotated[list[CompletedStep], operator.add]
    compensations: Annotated[list[CompensationResult], operator.add]
    tokens: int
    cost_usd: float
    answer: str
    degraded: bool
    human_request: HumanHandoff | None
    human_error: str
    output: dict[str, Any]
    citations: list[dict[str, Any]]


# The keys whose change records a side effect that took place (a tool step's saga entry, a
# compensation's outcome): a checkpoint changing one is made durable at once.
EFFECT_KEYS = ("completed", "compensations")


def scope(state: RunState) -> dict[str, Any]:
    """The names expressions read: builtins plus every step output by step id."""
    given = state.get("input", {})
    route = state.get("route", {})
    return {
        **state.get("outputs", {}),
        "input": given,
        "query": given.get("query"),
        "context": given.get("context", {}),
        "intent": route.get("intent"),
        "confidence": route.get("confidence"),
        "tier": state.get("tier"),
    }


def pending_compensations(state: RunState) -> list[CompletedStep]:
    """Completed steps still to undo, most recent first (the saga's reverse order)."""
    done = {result["step_id"] for result in state.get("compensations", [])}
    completed = state.get("completed", [])
    return [
        entry
        for entry in reversed(completed)
        if entry["compensation"] is not None and entry["step_id"] not in done
    ]
