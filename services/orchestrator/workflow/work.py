"""Route and Work: the router step, tool calls with their saga record, model calls, branches."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict
from typing import Any

from langgraph.runtime import Runtime

from services.orchestrator.workflow import model
from services.orchestrator.workflow.calls import (
    Meter,
    StepFailed,
    call_context,
    check_budget,
    guarded,
    idempotency_key,
    observed,
    with_retries,
)
from services.orchestrator.workflow.catalog import KNOWLEDGE_SEARCH
from services.orchestrator.workflow.context import WorkflowContext
from services.orchestrator.workflow.ports import (
    CallContext,
    GenerationRequest,
    Passage,
    RouteDecision,
    ToolEvent,
)
from services.orchestrator.workflow.state import (
    CompensationPlan,
    CompletedStep,
    RunState,
    scope,
)


def current(state: RunState, ctx: WorkflowContext) -> model.Step:
    """The step at the run's cursor."""
    return ctx.workflow.steps[state["cursor"]]


def as_text(value: Any) -> str:
    """A rendered template as prompt text."""
    if isinstance(value, str):
        return value
    return "" if value is None else json.dumps(value, sort_keys=True)


async def route(state: RunState, runtime: Runtime[WorkflowContext]) -> RunState:
    """Route: ask the router for the first tier and the escalation path."""
    ctx = runtime.context
    step = current(state, ctx)
    assert isinstance(step, model.RouterStep)

    async def body(meter: Meter) -> RunState:
        values = scope(state)
        query = as_text(step.query.render(values))
        context = values["context"] if isinstance(values["context"], Mapping) else {}
        call = call_context(state, ctx, step)
        ahead = ctx.ahead()
        asked = None
        if ahead is not None:
            asked = ahead.answer(step.id, query, context, step.tier_preference)

        def attempt(number: int) -> Awaitable[RouteDecision]:
            if number == 1 and asked is not None:
                return asked  # the engine asked this as the run started
            return ctx.ports.router.decide(call, query, context, step.tier_preference)

        decision = await with_retries(ctx, meter, attempt)
        meter.tier = decision.tier
        # The escalation path lists tiers above the first choice; drop any repeat of it.
        path = [tier for tier in decision.escalation_path if tier != decision.tier]
        return {
            "route": {**asdict(decision), "escalation_path": path},
            "tier": decision.tier,
            "escalations": 0,
            "cursor": ctx.workflow.following(step),
        }

    return await guarded(step, state, ctx, body)


async def work(state: RunState, runtime: Runtime[WorkflowContext]) -> RunState:
    """Work: run the tool, llm or condition step at the cursor."""
    ctx = runtime.context
    step = current(state, ctx)
    bodies: dict[type, Callable[[Meter], Awaitable[RunState]]] = {
        model.ToolStep: lambda meter: _tool(step, state, ctx, meter),
        model.LlmStep: lambda meter: _llm(step, state, ctx, meter),
        model.ConditionStep: lambda meter: _condition(step, state, ctx),
    }
    return await guarded(step, state, ctx, bodies[type(step)])


async def _tool(step: model.Step, state: RunState, ctx: WorkflowContext, meter: Meter) -> RunState:
    assert isinstance(step, model.ToolStep)
    values = scope(state)
    arguments = step.input.render(values)
    if not isinstance(arguments, dict):
        raise StepFailed("VALIDATION_FAILED", f"step '{step.id}' input is not an object")
    call = call_context(state, ctx, step)
    key = idempotency_key(state, step.tool, step.id)
    if step.tool == KNOWLEDGE_SEARCH:
        return await _search(step, state, ctx, meter, call, arguments, key)

    def attempt(number: int) -> Awaitable[dict[str, Any]]:
        event = ToolEvent(
            "requested", step.tool, step.id, key, number, arguments,
            write_ahead=step.side_effect != "read_only",
        )  # fmt: skip
        return observed(
            ctx, call, event, lambda: ctx.ports.tools.call(call, step.tool, arguments, key)
        )

    if step.side_effect != "read_only":
        # The state that led here is stored before the call goes out, so a crash from now
        # on resumes at this step with these arguments and replays it under the same key.
        await ctx.durable()
    output = await with_retries(ctx, meter, attempt)
    update: RunState = {"outputs": {step.id: output}, "cursor": ctx.workflow.following(step)}
    if step.side_effect != "read_only":
        plan = _compensation(step, state, ctx, {**values, step.id: output}, arguments, output)
        update["completed"] = [
            CompletedStep(
                step_id=step.id,
                tool=step.tool,
                side_effect=step.side_effect,
                idempotency_key=key,
                input=arguments,
                output=output,
                compensation=plan,
            )
        ]
    return update


def _compensation(
    step: model.ToolStep,
    state: RunState,
    ctx: WorkflowContext,
    values: Mapping[str, Any],
    arguments: dict[str, Any],
    output: dict[str, Any],
) -> CompensationPlan | None:
    # Resolved now, while the step's input and output are at hand, so a later cancel (even
    # from another process) needs nothing but the saga record.
    declared = ctx.workflow.compensations.get(step.id)
    if declared is None:
        return None
    rendered = declared.input.render(values) if declared.input else {**arguments, **output}
    return CompensationPlan(
        tool=declared.tool,
        input=rendered if isinstance(rendered, dict) else {"value": rendered},
        idempotency_key=idempotency_key(state, declared.tool, step.id),
    )


async def _search(
    step: model.ToolStep,
    state: RunState,
    ctx: WorkflowContext,
    meter: Meter,
    call: CallContext,
    arguments: dict[str, Any],
    key: str,
) -> RunState:
    query = as_text(arguments.get("query") or scope(state)["query"])
    top_k = int(arguments.get("top_k", 5))
    min_score = float(arguments.get("min_score", 0.0))

    async def search() -> Mapping[str, Any]:
        found = await ctx.ports.knowledge.search(call, query, top_k, min_score)
        passages = [asdict(passage) for passage in found]
        top = max((passage.score for passage in found), default=0.0)
        return {"passages": passages, "count": len(passages), "top_score": top}

    def attempt(number: int) -> Awaitable[dict[str, Any]]:
        event = ToolEvent(
            "requested", step.tool, step.id, key, number, arguments, write_ahead=False
        )
        return observed(ctx, call, event, search)

    output = await with_retries(ctx, meter, attempt)
    known = state.get("passages", [])
    seen = {passage["id"] for passage in known}
    fresh = [passage for passage in output["passages"] if passage["id"] not in seen]
    return {
        "outputs": {step.id: output},
        "passages": known + fresh,
        "cursor": ctx.workflow.following(step),
    }


def tool_results(state: RunState, ctx: WorkflowContext) -> dict[str, Any]:
    """Outputs of tool and escalation steps that ran: the evidence besides passages."""
    outputs = state.get("outputs", {})
    return {
        step.id: outputs[step.id]
        for step in ctx.workflow.steps
        if step.id in outputs
        and (
            (isinstance(step, model.ToolStep) and step.tool != KNOWLEDGE_SEARCH)
            or isinstance(step, model.EscalationStep)
        )
    }


async def _llm(step: model.Step, state: RunState, ctx: WorkflowContext, meter: Meter) -> RunState:
    assert isinstance(step, model.LlmStep)
    tier = model.as_tier(step.tier or state.get("tier"))
    meter.tier = tier
    tokens_left = check_budget(state, ctx, meter, before_call=True)
    passages = tuple(Passage(**passage) for passage in state.get("passages", []))
    prompt = as_text(step.prompt.render(scope(state)))
    request = GenerationRequest(
        tier=tier,
        prompt=prompt,
        system_prompt=step.system_prompt,
        passages=passages,
        tool_results=tool_results(state, ctx),
        max_tokens=min(step.max_tokens, tokens_left),
        temperature=step.temperature,
        json_output=step.json_output,
    )
    call = call_context(state, ctx, step)
    generation = await with_retries(ctx, meter, lambda _: ctx.ports.models.generate(call, request))
    meter.tokens += generation.tokens
    meter.cost_usd += generation.cost_usd
    check_budget(state, ctx, meter, before_call=False)
    output: dict[str, Any] = {
        "text": generation.text,
        "prompt": prompt,
        "tier": tier,
        "tokens": generation.tokens,
        "cost_usd": generation.cost_usd,
        "score": generation.score,
    }
    if step.json_output:
        try:
            output["data"] = json.loads(generation.text)
        except ValueError as error:
            # Left to the gate: a json_schema check on null fails and Repair escalates.
            output["data"], output["parse_error"] = None, str(error)
    update: RunState = {"outputs": {step.id: output}, "cursor": ctx.workflow.following(step)}
    if step.answer:
        update["answer"] = generation.text
        update["citations"] = [_citation(passage) for passage in passages]
    return update


def _citation(passage: Passage) -> dict[str, Any]:
    return {
        "document_id": passage.document_id,
        "title": passage.title,
        "chunk_id": passage.id,
        "uri": passage.uri,
    }


async def _condition(step: model.Step, state: RunState, ctx: WorkflowContext) -> RunState:
    assert isinstance(step, model.ConditionStep)
    value = step.test.test(scope(state))
    target = step.then if value else step.otherwise
    cursor = ctx.workflow.index(target) if target else ctx.workflow.index(step.id) + 1
    return {"outputs": {step.id: {"value": value}}, "cursor": cursor}
