"""Validation of what the registries store: semantic versions, ToolSpecs and AgentManifests."""

from __future__ import annotations

import math
import re

import grpc
from google.protobuf import duration_pb2

from services.kit import errors
from supportmesh.control.v1 import resources_pb2 as res
from supportmesh.spec.v1 import tier_pb2, tool_pb2

_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)
TOOL_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,127}$")
AGENT_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,127}$")
WORKFLOW_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_MAX_TIMEOUT_S = 600
_STATUS_NAMES = frozenset(code.name for code in grpc.StatusCode)
_TIERS = frozenset({tier_pb2.SLM_A, tier_pb2.SLM_B, tier_pb2.LLM})
_SIDE_EFFECTS = frozenset(
    {
        tool_pb2.SIDE_EFFECT_READ_ONLY,
        tool_pb2.SIDE_EFFECT_COMPENSATABLE,
        tool_pb2.SIDE_EFFECT_IRREVERSIBLE,
    }
)

# Semantic-version precedence: a release outranks its pre-releases; numeric identifiers
# rank below alphanumeric ones and compare as numbers.
SortKey = tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]


def check_semver(version: str, field: str) -> str:
    """INVALID_ARGUMENT unless ``version`` is a semantic version such as ``1.2.0``."""
    if not _SEMVER.match(version):
        raise errors.InvalidArgument(
            f"{field} must be a semantic version such as 1.0.0", field=field
        )
    return version


def semver_key(version: str) -> SortKey:
    """Sort key giving semantic-version precedence (build metadata is ignored)."""
    match = _SEMVER.match(version)
    if match is None:
        return (-1, 0, 0, 0, ())
    major, minor, patch, pre = match.groups()
    if pre is None:
        return (int(major), int(minor), int(patch), 1, ())
    parts = tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in pre.split("."))
    return (int(major), int(minor), int(patch), 0, parts)


def _name(value: str, pattern: re.Pattern[str], field: str, what: str) -> None:
    if not value:
        raise errors.InvalidArgument(f"{field} is required", field=field)
    if not pattern.match(value):
        raise errors.InvalidArgument(f"{field} is not a valid {what} name", field=field)


def _non_negative(duration: duration_pb2.Duration, field: str) -> None:
    if duration.seconds < 0 or duration.nanos < 0:
        raise errors.InvalidArgument(f"{field} must not be negative", field=field)


def validate_tool(spec: tool_pb2.ToolSpec, field: str = "spec") -> None:
    """Refuse a ToolSpec the orchestrator could not run safely."""
    _name(spec.name, TOOL_NAME, f"{field}.name", "tool")
    check_semver(spec.version, f"{field}.version")
    if spec.side_effect not in _SIDE_EFFECTS:
        raise errors.InvalidArgument(
            f"{field}.side_effect must be READ_ONLY, COMPENSATABLE or IRREVERSIBLE",
            field=f"{field}.side_effect",
        )
    if spec.side_effect == tool_pb2.SIDE_EFFECT_COMPENSATABLE or spec.compensation_tool:
        _name(spec.compensation_tool, TOOL_NAME, f"{field}.compensation_tool", "tool")
        if spec.compensation_tool == spec.name:
            raise errors.InvalidArgument(
                "a tool cannot compensate itself", field=f"{field}.compensation_tool"
            )
    timeout = spec.timeout.ToTimedelta().total_seconds()
    if not spec.HasField("timeout") or not 0 < timeout <= _MAX_TIMEOUT_S:
        raise errors.InvalidArgument(
            f"{field}.timeout must be above 0 and at most {_MAX_TIMEOUT_S} s",
            field=f"{field}.timeout",
        )
    _validate_retry(spec.retry_policy, f"{field}.retry_policy")
    _non_negative(spec.idempotency.retention, f"{field}.idempotency.retention")
    if spec.max_concurrency < 0:
        raise errors.InvalidArgument(
            f"{field}.max_concurrency must not be negative", field=f"{field}.max_concurrency"
        )


def _validate_retry(policy: tool_pb2.RetryPolicy, field: str) -> None:
    if policy.max_attempts < 0:
        raise errors.InvalidArgument(
            f"{field}.max_attempts must not be negative", field=f"{field}.max_attempts"
        )
    if policy.backoff_multiplier < 0 or not math.isfinite(policy.backoff_multiplier):
        raise errors.InvalidArgument(
            f"{field}.backoff_multiplier must be a non-negative number",
            field=f"{field}.backoff_multiplier",
        )
    _non_negative(policy.initial_backoff, f"{field}.initial_backoff")
    _non_negative(policy.max_backoff, f"{field}.max_backoff")
    unknown = sorted(set(policy.retryable_codes) - _STATUS_NAMES)
    if unknown:
        raise errors.InvalidArgument(
            f"{field}.retryable_codes has unknown status names {unknown}",
            field=f"{field}.retryable_codes",
        )


def validate_agent(manifest: res.AgentManifest, field: str = "manifest") -> None:
    """Refuse an AgentManifest that names no workflow or carries impossible limits."""
    _name(manifest.name, AGENT_NAME, f"{field}.name", "agent")
    check_semver(manifest.version, f"{field}.version")
    _name(manifest.workflow, WORKFLOW_NAME, f"{field}.workflow", "workflow")
    if manifest.workflow_version:
        check_semver(manifest.workflow_version, f"{field}.workflow_version")
    for tool in manifest.allowed_tools:
        _name(tool, TOOL_NAME, f"{field}.allowed_tools", "tool")
    if len(set(manifest.allowed_tools)) != len(manifest.allowed_tools):
        raise errors.InvalidArgument(
            f"{field}.allowed_tools lists a tool twice", field=f"{field}.allowed_tools"
        )
    if any(tier not in _TIERS for tier in manifest.allowed_tiers):
        raise errors.InvalidArgument(
            f"{field}.allowed_tiers may only hold SLM_A, SLM_B and LLM",
            field=f"{field}.allowed_tiers",
        )
    if manifest.max_tokens_per_run < 0:
        raise errors.InvalidArgument(
            f"{field}.max_tokens_per_run must not be negative", field=f"{field}.max_tokens_per_run"
        )
    cost = manifest.max_cost_per_run_usd
    if cost < 0 or not math.isfinite(cost):
        raise errors.InvalidArgument(
            f"{field}.max_cost_per_run_usd must be a non-negative number",
            field=f"{field}.max_cost_per_run_usd",
        )
    _non_negative(manifest.max_step_time, f"{field}.max_step_time")
