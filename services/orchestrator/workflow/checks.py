"""Semantic checks a schema cannot express: references, names, tools, compensation, reachability."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from services.orchestrator.workflow import model
from services.orchestrator.workflow.catalog import ToolInfo
from services.orchestrator.workflow.errors import Issue, IssueCode
from services.orchestrator.workflow.expressions import Expression
from services.orchestrator.workflow.source import SourceMap
from services.orchestrator.workflow.templates import Template

# Names every expression may read besides the ids of steps that ran before it.
BUILTIN_NAMES = frozenset({"input", "query", "context", "intent", "confidence", "tier"})
_GATE_TARGETS = (model.ToolStep, model.LlmStep, model.EscalationStep, model.RouterStep)


def check(
    workflow: model.Workflow,
    data: Mapping[str, Any],
    where: SourceMap,
    known_tools: Mapping[str, ToolInfo],
) -> list[Issue]:
    """Every semantic issue of a schema-valid workflow."""
    checker = _Checker(workflow, where, known_tools)
    checker.run(data)
    return checker.issues


class _Checker:
    def __init__(
        self, workflow: model.Workflow, where: SourceMap, known_tools: Mapping[str, ToolInfo]
    ) -> None:
        self.workflow = workflow
        self.where = where
        self.known_tools = known_tools
        self.issues: list[Issue] = []
        self.first: dict[str, int] = {}

    def fail(self, path: str, message: str, code: IssueCode = "reference") -> None:
        self.issues.append(self.where.issue(path, message, code))

    def run(self, data: Mapping[str, Any]) -> None:
        steps = self.workflow.steps
        for index, step in enumerate(steps):
            if step.id in self.first:
                line = steps[self.first[step.id]].line
                message = f"duplicate step id '{step.id}' (first defined on line {line})"
                self.fail(f"/steps/{index}/id", message, "duplicate")
            else:
                self.first[step.id] = index
        seen_router = False
        for index, step in enumerate(steps):
            at = f"/steps/{index}"
            self.jumps(step, index, at)
            self.names(step, index, at)
            if isinstance(step, model.GateStep):
                self.gate(step, index, at)
            if isinstance(step, model.EscalationStep) and step.input_schema is not None:
                self.schema(step.input_schema, f"{at}/config/input_schema")
            if isinstance(step, model.LlmStep) and step.tier is None and not seen_router:
                self.fail(
                    f"{at}/type",
                    f"llm step '{step.id}' needs a router step before it or a fixed config.tier",
                )
            seen_router = seen_router or isinstance(step, model.RouterStep)
        self.compensations(data.get("compensation", []))
        self.fallback(data.get("error_handling", []))
        self.reachability()

    def later(self, target: str, index: int, path: str, what: str) -> None:
        """``target`` must be END or a step after ``index``: jumps only go forward."""
        if target == model.END:
            return
        found = self.first.get(target)
        if found is None:
            self.fail(path, f"{what} '{target}' is not a step of this workflow")
        elif found <= index:
            self.fail(path, f"{what} '{target}' must be a later step (jumps only go forward)")

    def jumps(self, step: model.Step, index: int, at: str) -> None:
        if step.next is not None:
            self.later(step.next, index, f"{at}/next", "next step")
        if isinstance(step, model.ConditionStep):
            self.later(step.then, index, f"{at}/then", "then")
            if step.otherwise is not None:
                self.later(step.otherwise, index, f"{at}/else", "else")
        if step.on_failure.target is not None:
            self.later(step.on_failure.target, index, f"{at}/on_failure/goto", "goto")

    def names(self, step: model.Step, index: int, at: str) -> None:
        allowed = BUILTIN_NAMES | {s.id for s in self.workflow.steps[:index]}
        for path, expression in _expressions(step, at):
            for name in sorted(expression.names() - allowed):
                if name in self.first:
                    message = f"'{name}' is a step that has not run yet at '{step.id}'"
                else:
                    message = f"unknown name '{name}' in {expression.source!r}"
                self.fail(path, message, "expression")

    def gate(self, step: model.GateStep, index: int, at: str) -> None:
        for position, validator in enumerate(step.validators):
            if isinstance(validator, model.JsonSchemaCheck):
                self.schema(validator.schema, f"{at}/validators/{position}/schema")
        if step.target == model.INPUT:
            return
        found = self.first.get(step.target)
        if found is None or found >= index:
            self.fail(f"{at}/target", f"gate target '{step.target}' must be an earlier step")
            return
        target = self.workflow.steps[found]
        if not isinstance(target, _GATE_TARGETS):
            self.fail(f"{at}/target", f"a {type(target).__name__} has no output to verify")
        if not isinstance(target, model.LlmStep):
            return
        # Repair re-runs from the target, so nothing in between may repeat a side effect.
        for between in self.workflow.steps[found + 1 : index]:
            if isinstance(between, model.ToolStep) and between.side_effect != "read_only":
                self.fail(
                    f"{at}/target",
                    f"repairing '{target.id}' would repeat the side "
                    f"effect of '{between.id}'; move the gate before it",
                )

    def schema(self, schema: Mapping[str, Any], path: str) -> None:
        try:
            Draft202012Validator.check_schema(dict(schema))
        except SchemaError as error:
            self.fail(path, f"not a valid JSON Schema: {error.message}", "schema")

    def compensations(self, entries: list[Mapping[str, Any]]) -> None:
        declared: set[str] = set()
        for position, entry in enumerate(entries):
            at = f"/compensation/{position}"
            step_id, action = entry["step"], entry["action"]
            if step_id in declared:
                self.fail(f"{at}/step", f"step '{step_id}' already has a compensation", "duplicate")
            declared.add(step_id)
            if action not in self.known_tools:
                self.fail(
                    f"{at}/action",
                    f"compensation for '{step_id}' calls unknown tool '{action}'",
                    "tool_unknown",
                )
            index = self.first.get(step_id, -1)
            step = self.workflow.steps[index] if index >= 0 else None
            if not isinstance(step, model.ToolStep):
                self.fail(
                    f"{at}/step", f"'{step_id}' is not a tool step of this workflow", "compensation"
                )
                continue
            if step.side_effect == "read_only" and step.tool in self.known_tools:
                self.fail(
                    f"{at}/step",
                    f"step '{step_id}' calls read-only tool '{step.tool}'; "
                    "there is nothing to compensate",
                    "compensation",
                )
            info = self.known_tools.get(step.tool)
            if info is not None and info.compensation_tool not in ("", action):
                self.fail(
                    f"{at}/action",
                    f"the registry says '{step.tool}' is undone by "
                    f"'{info.compensation_tool}', not '{action}'",
                    "compensation",
                )
            names = BUILTIN_NAMES | {s.id for s in self.workflow.steps[: index + 1]}
            template = self.workflow.compensations[step_id].input
            for name in sorted(template.names() - names if template else ()):
                self.fail(f"{at}/input", f"unknown name '{name}'", "expression")
        output = self.workflow.output
        all_names = BUILTIN_NAMES | set(self.first)
        for name in sorted(output.names() - all_names if output else ()):
            self.fail("/output", f"unknown name '{name}'", "expression")

    def fallback(self, handlers: list[Mapping[str, Any]]) -> None:
        fallback = self.workflow.fallback
        if fallback.action != "escalate":
            return
        index = self.first.get(fallback.step or "")
        step = None if index is None else self.workflow.steps[index]
        if not isinstance(step, model.EscalationStep):
            position = next(i for i, h in enumerate(handlers) if h["type"] == "fallback")
            field = "step" if fallback.step else "action"
            self.fail(
                f"/error_handling/{position}/{field}",
                "a fallback with action 'escalate' needs 'step' naming an escalation step",
            )

    def reachability(self) -> None:
        steps = self.workflow.steps
        end = len(steps)
        edges: dict[int, set[int]] = {}
        for index, step in enumerate(steps):
            targets = {self.position(step.next, index + 1)}
            if isinstance(step, model.ConditionStep):
                targets = {self.position(step.then, end), self.position(step.otherwise, index + 1)}
            targets.add(self.position(step.on_failure.target, end))
            edges[index] = targets
        start = {0, self.position(self.workflow.fallback.step, end)}
        reached, frontier = set(start), list(start)
        while frontier:
            for target in edges.get(frontier.pop(), ()):
                if target not in reached:
                    reached.add(target)
                    frontier.append(target)
        for index, step in enumerate(steps):
            if index not in reached:
                self.fail(
                    f"/steps/{index}/id",
                    f"step '{step.id}' is unreachable: no step leads to it",
                    "unreachable",
                )

    def position(self, target: str | None, default: int) -> int:
        """The index a jump lands on; END and unknown targets land past the last step."""
        if target is None:
            return default
        return self.first.get(target, len(self.workflow.steps))


def _expressions(step: model.Step, at: str) -> Iterator[tuple[str, Expression]]:
    if step.condition is not None:
        yield f"{at}/condition", step.condition
    templates: list[tuple[str, Template]] = []
    if isinstance(step, model.RouterStep):
        templates.append((f"{at}/config/query", step.query))
    elif isinstance(step, model.ToolStep):
        templates.append((f"{at}/input", step.input))
    elif isinstance(step, model.LlmStep | model.EscalationStep):
        templates.append((f"{at}/config/prompt", step.prompt))
    elif isinstance(step, model.ConditionStep):
        yield f"{at}/if", step.test
    elif isinstance(step, model.GateStep):
        for position, validator in enumerate(step.validators):
            value = getattr(validator, "value", None)
            if isinstance(value, Expression):
                yield f"{at}/validators/{position}/value", value
    for path, template in templates:
        for expression in template.expressions():
            yield path, expression
