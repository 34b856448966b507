"""The published JSON Schema (workflows/schema.json) and its errors mapped to source lines."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from services.orchestrator.workflow.errors import Issue
from services.orchestrator.workflow.source import SourceMap, pointer

REPO_ROOT = Path(__file__).resolve().parents[3]
WORKFLOWS_DIR = REPO_ROOT / "workflows"
SCHEMA_PATH = WORKFLOWS_DIR / "schema.json"

_MAX_REPR = 60


def schema_validator(path: Path = SCHEMA_PATH) -> Draft202012Validator:
    """A validator for the schema at ``path``; build it once per process and reuse it."""
    schema = json.loads(path.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def schema_issues(data: Any, where: SourceMap, validator: Draft202012Validator) -> list[Issue]:
    """Every schema violation in ``data``, located in the source."""
    issues: list[Issue] = []
    for error in validator.iter_errors(data):
        at = pointer(error.absolute_path)
        if error.validator == "additionalProperties":
            issues.extend(_unexpected(error, at, where))
        else:
            issues.append(where.issue(at, _message(error)))
    return _dedupe(issues)


def _unexpected(error: ValidationError, at: str, where: SourceMap) -> Iterable[Issue]:
    declared = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
    instance = error.instance if isinstance(error.instance, dict) else {}
    extra = [key for key in instance if key not in declared]
    if not extra:
        yield where.issue(at, error.message)
    for name in extra:
        yield where.issue(at + pointer([name]), f"unknown field '{name}'", key=True)


def _message(error: ValidationError) -> str:
    if error.validator == "enum":
        options = error.validator_value if isinstance(error.validator_value, list) else []
        allowed = ", ".join(repr(option) for option in options)
        return f"{_short(error.instance)} is not one of {allowed}"
    if error.validator == "oneOf" and isinstance(error.validator_value, list):
        options = [
            repr(option) for branch in error.validator_value for option in branch.get("enum", [])
        ]
        options += [
            f"an object with {', '.join(repr(key) for key in branch['required'])}"
            for branch in error.validator_value
            if branch.get("type") == "object" and branch.get("required")
        ]
        return f"{_short(error.instance)} is not one of {', '.join(options)}"
    if error.validator == "pattern":
        return f"{_short(error.instance)} does not match {error.validator_value!r}"
    if error.validator == "not":
        return f"{_short(error.instance)} is reserved"
    return error.message


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


def _dedupe(issues: list[Issue]) -> list[Issue]:
    seen: set[tuple[str, str]] = set()
    unique = []
    for issue in issues:
        if (issue.path, issue.message) not in seen:
            seen.add((issue.path, issue.message))
            unique.append(issue)
    return unique
