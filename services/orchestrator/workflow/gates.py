"""Verify: a gate's validators (json_schema, score_threshold, factuality, critic_call)."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator
from langgraph.runtime import Runtime

from services.orchestrator.workflow import model
from services.orchestrator.workflow.calls import (
    Meter,
    StepFailed,
    call_context,
    check_budget,
    guarded,
    with_retries,
)
from services.orchestrator.workflow.context import WorkflowContext
from services.orchestrator.workflow.factuality import check_factuality, flatten
from services.orchestrator.workflow.ports import CritiqueRequest
from services.orchestrator.workflow.state import GateResult, RunState, scope
from services.orchestrator.workflow.work import as_text, current, tool_results

CRITIC_MAX_TOKENS = 300
MAX_EVIDENCE = 20


async def verify(state: RunState, runtime: Runtime[WorkflowContext]) -> RunState:
    """Verify: run the gate at the cursor; the first failing validator sends the run to Repair."""
    ctx = runtime.context
    step = current(state, ctx)
    assert isinstance(step, model.GateStep)

    async def body(meter: Meter) -> RunState:
        if step.target != model.INPUT and step.target not in state.get("outputs", {}):
            # The target was skipped by its condition: there is nothing to verify.
            meter.status = "SKIPPED"
            return {"cursor": ctx.workflow.following(step)}
        results: list[GateResult] = []
        for validator in step.validators:
            passed, skipped, score, detail = await _check(validator, step, state, ctx, meter)
            results.append(
                GateResult(
                    step_id=step.id,
                    target=step.target,
                    validator=_NAMES[type(validator)],
                    passed=passed,
                    skipped=skipped,
                    score=score,
                    detail=detail,
                    tier=_judged_tier(step, state),
                )
            )
            if not passed:
                # Cheap validators come first in a gate; stop before paying for the rest.
                message = f"{_NAMES[type(validator)]} failed on '{step.target}': {detail}"
                raise StepFailed(
                    "VALIDATION_FAILED", message, kind="gate", update={"gates": results}
                )
        return {"gates": results, "cursor": ctx.workflow.following(step)}

    return await guarded(step, state, ctx, body)


_NAMES: Mapping[type, str] = {
    model.JsonSchemaCheck: "json_schema",
    model.ScoreThreshold: "score_threshold",
    model.FactualityCheck: "factuality",
    model.CriticCall: "critic_call",
}


def schema_problem(schema: Mapping[str, Any], value: Any) -> str | None:
    """Where and why ``value`` breaks ``schema`` (JSON Schema 2020-12), or None when it holds."""
    try:
        checker = _checker(json.dumps(schema, sort_keys=True, default=dict))
    except (TypeError, ValueError):  # a value JSON cannot spell (a YAML date): uncached
        checker = Draft202012Validator(
            dict(schema), format_checker=Draft202012Validator.FORMAT_CHECKER
        )
    error = next(iter(sorted(checker.iter_errors(value), key=lambda e: e.path)), None)
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path) or "(root)"
    return f"{where}: {error.message}"


@functools.lru_cache(maxsize=256)
def _checker(schema: str) -> Draft202012Validator:
    # Compiled once per schema: deployed workflows hold a handful of them.
    return Draft202012Validator(
        json.loads(schema), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def _judged_tier(step: model.GateStep, state: RunState) -> str:
    """The tier that produced the checked output, for the router's feedback."""
    output = state.get("outputs", {}).get(step.target)
    return str(output.get("tier", "")) if isinstance(output, Mapping) else ""


def _subject(step: model.GateStep, state: RunState, ctx: WorkflowContext) -> tuple[Any, Any]:
    """What the gate checks by default, and the target's whole output."""
    if step.target == model.INPUT:
        given = state.get("input", {})
        return given, given
    output = state.get("outputs", {}).get(step.target)
    target = ctx.workflow.step(step.target)
    if isinstance(target, model.LlmStep) and isinstance(output, Mapping):
        return (output.get("data") if target.json_output else output.get("text")), output
    return output, output


async def _check(
    validator: model.Validator,
    step: model.GateStep,
    state: RunState,
    ctx: WorkflowContext,
    meter: Meter,
) -> tuple[bool, bool, float | None, str]:
    """(passed, skipped, score, detail) for one validator."""
    subject, output = _subject(step, state, ctx)
    values = scope(state)
    if isinstance(validator, model.JsonSchemaCheck):
        value = validator.value.evaluate(values) if validator.value else subject
        problem = schema_problem(validator.schema, value)
        return problem is None, False, None, problem or "valid"
    if isinstance(validator, model.ScoreThreshold):
        raw = (
            validator.value.evaluate(values)
            if validator.value
            else (output.get("score") if isinstance(output, Mapping) else None)
        )
        if not isinstance(raw, int | float) or isinstance(raw, bool):
            return False, False, None, "no score to compare"
        score = float(raw)
        return score >= validator.min, False, score, f"score {score:.2f}, min {validator.min:.2f}"
    answer = as_text(subject)
    evidence = _evidence(state, ctx, exclude=step.target)
    if isinstance(validator, model.FactualityCheck):
        prompt = output.get("prompt", "") if isinstance(output, Mapping) else ""
        report = check_factuality(
            answer,
            evidence,
            [flatten(state.get("input", {})), as_text(prompt)],
            min_overlap=validator.min_overlap,
            min_supported=validator.min_supported,
        )
        return report.passed, False, report.supported_share, report.explain()
    return await _critic(validator, state, ctx, meter, answer, evidence)


async def _critic(
    validator: model.CriticCall,
    state: RunState,
    ctx: WorkflowContext,
    meter: Meter,
    answer: str,
    evidence: list[str],
) -> tuple[bool, bool, float | None, str]:
    if validator.tier is None:
        return True, True, None, "skipped: no critic tier configured"
    step = current(state, ctx)
    meter.tier = validator.tier
    tokens_left = check_budget(state, ctx, meter, before_call=True)
    request = CritiqueRequest(
        tier=validator.tier,
        question=as_text(scope(state)["query"]),
        answer=answer,
        evidence=tuple(evidence[:MAX_EVIDENCE]),
        rubric=validator.rubric,
        max_tokens=min(CRITIC_MAX_TOKENS, tokens_left),
    )
    call = call_context(state, ctx, step)
    critique = await with_retries(ctx, meter, lambda _: ctx.ports.models.critique(call, request))
    meter.tokens += critique.tokens
    meter.cost_usd += critique.cost_usd
    check_budget(state, ctx, meter, before_call=False)
    passed = critique.score >= validator.min
    return passed, False, critique.score, f"critic {critique.score:.2f}: {critique.reason}"


def _evidence(state: RunState, ctx: WorkflowContext, *, exclude: str) -> list[str]:
    """Passage texts, then each tool or human step's id, input and output as text."""
    values = scope(state)
    evidence = [passage["text"] for passage in state.get("passages", [])]
    for step_id, output in tool_results(state, ctx).items():
        if step_id == exclude:
            continue
        step = ctx.workflow.step(step_id)
        # What was sent is as much a fact of the run as what came back.
        sent = step.input.render(values) if isinstance(step, model.ToolStep) else {}
        evidence.append(flatten({"input": sent, "output": output}, step_id))
    return evidence
