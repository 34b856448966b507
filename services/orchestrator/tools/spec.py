"""Building ToolSpecs: schemas as Structs, the standard retry and idempotency settings."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from google.protobuf import duration_pb2, json_format, struct_pb2

from supportmesh.spec.v1 import tool_pb2

JsonObject = dict[str, Any]
ToolFn = Callable[[str, JsonObject, str], Awaitable[JsonObject]]
"""A tool's implementation: ``(tenant_id, input, idempotency_key) -> output``."""

KEY_TEMPLATE = "{service}:{tenant_id}:{resource_id}:{timestamp}"
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
READ_ONLY = tool_pb2.SIDE_EFFECT_READ_ONLY
COMPENSATABLE = tool_pb2.SIDE_EFFECT_COMPENSATABLE
IRREVERSIBLE = tool_pb2.SIDE_EFFECT_IRREVERSIBLE

# Codes worth retrying: the call did not take effect, or took effect under its idempotency key.
_RETRYABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED", "RESOURCE_EXHAUSTED")


def duration(seconds: float) -> duration_pb2.Duration:
    """A protobuf Duration of ``seconds``."""
    value = duration_pb2.Duration()
    value.FromTimedelta(timedelta(seconds=seconds))
    return value


def struct(value: JsonObject) -> struct_pb2.Struct:
    """A JSON object as a protobuf Struct."""
    result = struct_pb2.Struct()
    result.update(value)
    return result


def schema_of(value: struct_pb2.Struct) -> JsonObject:
    """A Struct back as a JSON object (numbers come back as floats)."""
    return json_format.MessageToDict(value)


def obj(
    properties: JsonObject, required: tuple[str, ...] = (), *, closed: bool = True
) -> JsonObject:
    """An object schema; ``closed`` refuses unknown properties."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": not closed,
    }


def retry_policy(
    max_attempts: int = 3, initial_s: float = 0.1, max_s: float = 2.0
) -> tool_pb2.RetryPolicy:
    """Exponential backoff with full jitter over the standard retryable codes."""
    return tool_pb2.RetryPolicy(
        max_attempts=max_attempts,
        initial_backoff=duration(initial_s),
        max_backoff=duration(max_s),
        backoff_multiplier=2.0,
        retryable_codes=list(_RETRYABLE),
    )


def tool_spec(
    name: str,
    description: str,
    *,
    input_schema: JsonObject,
    output_schema: JsonObject,
    side_effect: tool_pb2.SideEffect.ValueType,
    timeout_s: float,
    compensation: str = "",
    retention: timedelta | None = None,
    max_concurrency: int = 0,
    version: str = "1.0.0",
) -> tool_pb2.ToolSpec:
    """A ToolSpec; side-effecting tools require an idempotency key kept for ``retention``."""
    idempotency = tool_pb2.Idempotency(required=side_effect != READ_ONLY)
    if idempotency.required:
        idempotency.key_template = KEY_TEMPLATE
        idempotency.retention.FromTimedelta(retention or timedelta(hours=24))
    return tool_pb2.ToolSpec(
        name=name,
        version=version,
        description=description,
        input_schema=struct({"$schema": SCHEMA_DIALECT, **input_schema}),
        output_schema=struct({"$schema": SCHEMA_DIALECT, **output_schema}),
        side_effect=side_effect,
        compensation_tool=compensation,
        timeout=duration(timeout_s),
        retry_policy=retry_policy(),
        idempotency=idempotency,
        max_concurrency=max_concurrency,
    )
