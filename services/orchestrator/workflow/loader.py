"""Loading a workflow: YAML with positions → JSON Schema → typed statements → semantic checks."""

from __future__ import annotations

import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from services.orchestrator.workflow import catalog, checks, model
from services.orchestrator.workflow.catalog import ToolInfo
from services.orchestrator.workflow.errors import Issue, IssueCode, WorkflowError
from services.orchestrator.workflow.expressions import (
    Expression,
    ExpressionError,
    parse_expression,
)
from services.orchestrator.workflow.schema import WORKFLOWS_DIR, schema_issues, schema_validator
from services.orchestrator.workflow.source import SourceMap, load_yaml
from services.orchestrator.workflow.templates import Template, TemplateError, parse_template

_SIDE_EFFECTS: Mapping[int, model.SideEffect] = {
    catalog.READ_ONLY: "read_only",
    catalog.COMPENSATABLE: "compensatable",
}
_DEFAULT_ON_FAILURE: Mapping[str, model.FailureAction] = {
    "router": "fallback",
    "llm": "fallback",
    "gate": "fallback",
}


def load_workflow(
    text: str,
    *,
    known_tools: Mapping[str, ToolInfo],
    source: str = "<workflow>",
    validator: Draft202012Validator | None = None,
) -> model.Workflow:
    """Parse and check a workflow; raise :class:`WorkflowError` listing every issue by line."""
    data, where = load_yaml(text, source=source)
    issues = schema_issues(data, where, validator or schema_validator())
    if issues:
        raise WorkflowError(issues, source=source)
    builder = _Builder(where, known_tools)
    workflow = builder.build(data, source)
    issues = builder.issues + checks.check(workflow, data, where, known_tools)
    if issues:
        raise WorkflowError(issues, source=source)
    return workflow


def load_workflow_file(
    path: Path,
    *,
    known_tools: Mapping[str, ToolInfo],
    validator: Draft202012Validator | None = None,
) -> model.Workflow:
    """Load one workflow file; errors name the file."""
    text = path.read_text(encoding="utf-8")
    return load_workflow(text, known_tools=known_tools, source=str(path), validator=validator)


def load_workflows(
    directory: Path = WORKFLOWS_DIR,
    *,
    known_tools: Mapping[str, ToolInfo],
    validator: Draft202012Validator | None = None,
) -> dict[str, model.Workflow]:
    """Load every ``*.yaml`` in ``directory`` by workflow name; the first bad file raises."""
    checker = validator or schema_validator()
    loaded: dict[str, model.Workflow] = {}
    for path in sorted(directory.glob("*.yaml")):
        workflow = load_workflow_file(path, known_tools=known_tools, validator=checker)
        if workflow.name in loaded:
            issue = Issue(
                "/name", 1, 1, f"workflow '{workflow.name}' is defined twice", "duplicate"
            )
            raise WorkflowError([issue], source=str(path))
        loaded[workflow.name] = workflow
    return loaded


class _Builder:
    """Turns schema-valid data into statements, collecting expression and tool issues."""

    def __init__(self, where: SourceMap, known_tools: Mapping[str, ToolInfo]) -> None:
        self.where = where
        self.known_tools = known_tools
        self.issues: list[Issue] = []
        self.default_wall_ms = model.Budgets.wall_ms

    def fail(self, path: str, message: str, code: IssueCode) -> None:
        """Record an issue at ``path``."""
        self.issues.append(self.where.issue(path, message, code))

    def expression(self, text: str | None, path: str) -> Expression | None:
        """Parse an optional expression, recording a located issue when it is bad."""
        if text is None:
            return None
        try:
            return parse_expression(text)
        except ExpressionError as error:
            self.fail(path, f"bad expression {text!r}: {error}", "expression")
            return None

    def template(self, value: Any, path: str) -> Template:
        """Parse a template, recording a located issue when a placeholder is bad."""
        try:
            return parse_template(value)
        except TemplateError as error:
            self.fail(path + error.path, str(error), "expression")
            return parse_template(None)

    def build(self, data: Mapping[str, Any], source: str) -> model.Workflow:
        """The workflow statements."""
        budgets = model.Budgets(**data.get("budgets", {}))
        self.default_wall_ms = budgets.wall_ms
        steps = [self.step(raw, f"/steps/{i}") for i, raw in enumerate(data["steps"])]
        handlers = {handler["type"]: handler for handler in data.get("error_handling", [])}
        retry = handlers.get("retry")
        fallback = handlers.get("fallback")
        compensations = {
            entry["step"]: model.Compensation(
                entry["step"],
                entry["action"],
                self.template(entry["input"], f"/compensation/{i}/input")
                if "input" in entry
                else None,
            )
            for i, entry in enumerate(data.get("compensation", []))
        }
        return model.Workflow(
            name=data["name"],
            version=data["version"],
            description=data.get("description", ""),
            steps=tuple(steps),
            triggers=tuple(model.Trigger(**trigger) for trigger in data.get("triggers", [])),
            compensations=types.MappingProxyType(compensations),
            retry=model.RetryPolicy(
                max_attempts=retry.get("max_attempts", 3),
                backoff_factor=retry.get("backoff_factor", 2.0),
                initial_backoff_ms=retry.get("initial_backoff_ms", 200),
                max_backoff_ms=retry.get("max_backoff_ms", 5000),
            )
            if retry
            else model.RetryPolicy(),
            fallback=model.Fallback(
                action=fallback["action"],
                message=fallback.get("message", model.Fallback.message),
                failure_message=fallback.get("failure_message", model.Fallback.failure_message),
                step=fallback.get("step"),
            )
            if fallback
            else model.Fallback(),
            budgets=budgets,
            output=self.template(data["output"], "/output") if "output" in data else None,
            source=source,
        )

    def step(self, raw: Mapping[str, Any], at: str) -> model.Step:
        """One step's statement."""
        kind = raw["type"]
        config = raw.get("config", {})
        on_failure = raw.get("on_failure", _DEFAULT_ON_FAILURE.get(kind, "compensate"))
        common: dict[str, Any] = {
            "id": raw["id"],
            "line": self.where.locate(at).line,
            "condition": self.expression(raw.get("condition"), f"{at}/condition"),
            "next": raw.get("next"),
            "on_failure": model.OnFailure("goto", on_failure["goto"])
            if isinstance(on_failure, dict)
            else model.OnFailure(on_failure),
            "wall_ms": raw.get("budget", {}).get("wall_ms", self.default_wall_ms),
        }
        if kind == "router":
            query = self.template(config.get("query", "${input.query}"), f"{at}/config/query")
            preference = config.get("tier_preference", "balanced")
            return model.RouterStep(**common, query=query, tier_preference=preference)
        if kind == "tool":
            return self.tool_step(raw, at, common)
        if kind == "llm":
            return model.LlmStep(
                **common,
                prompt=self.template(config.get("prompt", "${input.query}"), f"{at}/config/prompt"),
                system_prompt=config.get("system_prompt", ""),
                tier=config.get("tier"),
                max_tokens=config.get("max_tokens", 500),
                temperature=config.get("temperature", 0.2),
                json_output=config.get("format", "text") == "json",
                answer=config.get("answer", True),
            )
        if kind == "condition":
            test = self.expression(raw["if"], f"{at}/if") or parse_expression("false")
            return model.ConditionStep(
                **common, test=test, then=raw["then"], otherwise=raw.get("else")
            )
        if kind == "escalation":
            return model.EscalationStep(
                **common,
                queue=config.get("queue", config.get("escalation_queue", "default")),
                prompt=self.template(config.get("prompt", "${query}"), f"{at}/config/prompt"),
                channels=tuple(config.get("notification_channels", ())),
                input_schema=config.get("input_schema"),
            )
        validators = tuple(
            self.validator(spec, f"{at}/validators/{i}") for i, spec in enumerate(raw["validators"])
        )
        return model.GateStep(**common, target=raw["target"], validators=validators)

    def tool_step(self, raw: Mapping[str, Any], at: str, common: dict[str, Any]) -> model.ToolStep:
        """A tool step, its side effect taken from the registry."""
        name = raw["tool"]
        info = self.known_tools.get(name)
        if info is None:
            message = f"step '{raw['id']}' calls unknown tool '{name}'"
            self.fail(f"{at}/tool", message, "tool_unknown")
        # An undeclared side effect is treated as irreversible: recorded, never assumed safe.
        side_effect = _SIDE_EFFECTS.get(info.side_effect, "irreversible") if info else "read_only"
        template = self.template(raw.get("input", {}), f"{at}/input")
        return model.ToolStep(**common, tool=name, input=template, side_effect=side_effect)

    def validator(self, spec: Mapping[str, Any], at: str) -> model.Validator:
        """One gate validator."""
        kind = spec["type"]
        if kind == "json_schema":
            value = self.expression(spec.get("value"), f"{at}/value")
            return model.JsonSchemaCheck(types.MappingProxyType(spec["schema"]), value)
        if kind == "score_threshold":
            value = self.expression(spec.get("value"), f"{at}/value")
            return model.ScoreThreshold(spec.get("min", 0.8), value)
        if kind == "factuality":
            return model.FactualityCheck(
                spec.get("min_overlap", 0.5), spec.get("min_supported", 1.0)
            )
        return model.CriticCall(spec.get("tier"), spec.get("min", 0.8), spec.get("rubric", ""))
