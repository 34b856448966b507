"""Running one step: its condition, wall-time budget, retries with backoff, and its record."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal, TypeVar

import grpc

from services.kit.errors import DomainError, reason_name
from services.kit.resilience import step_key
from services.orchestrator.workflow.context import WorkflowContext
from services.orchestrator.workflow.model import RetryPolicy, Step, ToolStep
from services.orchestrator.workflow.ports import CallContext, ToolCallError, ToolEvent, ToolPhase
from services.orchestrator.workflow.state import (
    Failure,
    RunState,
    StepRecord,
    StepStatus,
    scope,
)

T = TypeVar("T")
_RETRYABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)


class StepFailed(Exception):
    """A step (kind ``step``) or gate (kind ``gate``) that failed; Repair decides what next."""

    def __init__(
        self, reason: str, message: str, *, kind: str = "step", update: RunState | None = None
    ) -> None:
        """``reason`` is an ErrorReason wire name; ``update`` is state to keep all the same."""
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.kind = kind
        self.update: RunState = update or {}


@dataclass
class Meter:
    """What a step spent, kept even when it fails."""

    attempts: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    tier: str = ""
    status: StepStatus = "SUCCEEDED"


def classify(error: Exception) -> tuple[str, bool]:
    """An error's ErrorReason wire name and whether trying again may help."""
    if isinstance(error, ToolCallError):
        return error.reason, error.retryable
    if isinstance(error, DomainError):
        return reason_name(error.reason), error.code in _RETRYABLE_CODES
    if isinstance(error, TimeoutError):
        return "TIMEOUT", True
    return "INTERNAL", False


def backoff_s(policy: RetryPolicy, attempt: int, jitter: float) -> float:
    """Full-jitter exponential backoff before attempt ``attempt + 1``."""
    ceiling = policy.initial_backoff_ms * policy.backoff_factor ** (attempt - 1)
    return jitter * min(ceiling, policy.max_backoff_ms) / 1000


async def with_retries(
    ctx: WorkflowContext, meter: Meter, call: Callable[[int], Awaitable[T]]
) -> T:
    """Run ``call(attempt)`` under the workflow's retry policy; raise StepFailed at the end."""
    policy = ctx.workflow.retry
    for attempt in range(1, policy.max_attempts + 1):
        meter.attempts = attempt
        try:
            return await call(attempt)
        except StepFailed:
            raise
        except Exception as error:
            reason, retryable = classify(error)
            if not retryable or attempt == policy.max_attempts:
                raise StepFailed(reason, str(error) or type(error).__name__) from error
            await ctx.sleep(backoff_s(policy, attempt, ctx.jitter()))
    raise AssertionError("max_attempts is at least 1")


def call_context(state: RunState, ctx: WorkflowContext, step: Step) -> CallContext:
    """The context of a call made by ``step``, due when its wall budget ends."""
    return CallContext(
        tenant_id=state["tenant_id"],
        run_id=state["run_id"],
        user_id=state.get("user_id", ""),
        workflow=ctx.workflow.name,
        step_id=step.id,
        deadline=ctx.clock() + step.wall_ms / 1000,
    )


def idempotency_key(state: RunState, operation: str, step_id: str) -> str:
    """The key of ``step_id``'s call to ``operation``: the same on every attempt and replay."""
    started = datetime.fromisoformat(state["started_at"])
    return step_key(operation, state["tenant_id"], state["run_id"], step_id, started)


def record(
    step: Step,
    status: StepStatus,
    meter: Meter | None = None,
    latency_ms: int = 0,
    reason: str = "",
    message: str = "",
) -> StepRecord:
    """The step's entry in ``RunState.steps``."""
    meter = meter or Meter()
    return StepRecord(
        step_id=step.id,
        type=step.kind,
        tool=step.tool if isinstance(step, ToolStep) else "",
        status=status,
        tier=meter.tier,
        tokens=meter.tokens,
        cost_usd=meter.cost_usd,
        latency_ms=latency_ms,
        attempts=meter.attempts,
        reason=reason,
        message=message,
    )


def check_budget(state: RunState, ctx: WorkflowContext, meter: Meter, *, before_call: bool) -> int:
    """Tokens left; BUDGET_EXCEEDED before a call if none are left, after one on an overrun."""
    budgets = ctx.workflow.budgets
    tokens = state.get("tokens", 0) + meter.tokens
    cost = state.get("cost_usd", 0.0) + meter.cost_usd
    over = (
        tokens >= budgets.tokens or cost >= budgets.cost_usd
        if before_call
        else tokens > budgets.tokens or cost > budgets.cost_usd
    )
    if over:
        raise StepFailed(
            "BUDGET_EXCEEDED",
            f"the run used {tokens} of {budgets.tokens} tokens and "
            f"${cost:.4f} of ${budgets.cost_usd:.2f}",
        )
    return budgets.tokens - tokens


async def guarded(
    step: Step,
    state: RunState,
    ctx: WorkflowContext,
    body: Callable[[Meter], Awaitable[RunState]],
) -> RunState:
    """Run ``body`` for ``step``: skip on a false condition, enforce the wall budget, record."""
    if step.condition is not None and not step.condition.test(scope(state)):
        return {"cursor": ctx.workflow.index(step.id) + 1, "steps": [record(step, "SKIPPED")]}
    meter = Meter()
    began = ctx.clock()
    failure: Failure | None
    kept: RunState
    try:
        async with asyncio.timeout(step.wall_ms / 1000):
            update = await body(meter)
    except StepFailed as failed:
        kept = failed.update
        kind: Literal["step", "gate"] = "gate" if failed.kind == "gate" else "step"
        failure = Failure(kind=kind, step_id=step.id, reason=failed.reason, message=failed.message)
    except TimeoutError:
        kept = {}
        message = f"step '{step.id}' ran past its {step.wall_ms} ms budget"
        failure = Failure(kind="step", step_id=step.id, reason="TIMEOUT", message=message)
    else:
        failure, kept = None, {}
    latency_ms = int((ctx.clock() - began) * 1000)
    totals: RunState = {
        "tokens": state.get("tokens", 0) + meter.tokens,
        "cost_usd": state.get("cost_usd", 0.0) + meter.cost_usd,
    }
    if failure is None:
        entry = record(step, meter.status, meter, latency_ms)
        return {**update, **totals, "steps": [entry]}
    entry = record(step, "FAILED", meter, latency_ms, failure["reason"], failure["message"])
    return {**kept, **totals, "failure": failure, "steps": [entry]}


async def observed(
    ctx: WorkflowContext,
    call: CallContext,
    event: ToolEvent,
    run: Callable[[], Awaitable[Mapping[str, Any]]],
    *,
    done: ToolPhase = "succeeded",
) -> dict[str, Any]:
    """One attempt, with ``requested`` written ahead of it and its outcome written after."""
    tools = ctx.ports.tools
    await tools.record(call, event)
    try:
        output = dict(await run())
    except BaseException as error:
        # A step timeout cancels the attempt; the event still says it failed, then the
        # cancellation goes on so asyncio.timeout can turn it into TimeoutError.
        cancelled = isinstance(error, asyncio.CancelledError)
        text = "cancelled: the step ran out of time" if cancelled else str(error)
        await tools.record(call, replace(event, phase="failed", error=text or repr(error)))
        raise
    await tools.record(call, replace(event, phase=done, output=output))
    return output
