"""The tool registry: name → (ToolSpec, implementation), every call run through its adapter.

A call is checked before it leaves (known tool, idempotency key present when the spec
requires one, input valid against the spec's schema), then runs under the tool's resilience
adapter (bulkhead per tenant and tool, retries, the dependency's circuit breaker, a timeout
per attempt), and its output is checked against the output schema.

Compensation convention: a compensation tool accepts its forward tool's output as input
(unknown keys are ignored), so a saga passes the recorded output of the step it undoes.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.kit import errors
from services.kit.resilience import Adapter, Resilience
from services.orchestrator.tools import schema
from services.orchestrator.tools.spec import JsonObject, ToolFn, schema_of
from supportmesh.common.v1 import errors_pb2
from supportmesh.spec.v1 import tool_pb2

_MAX_REPORTED = 5


@dataclass(frozen=True)
class Tool:
    """One registered tool."""

    spec: tool_pb2.ToolSpec
    fn: ToolFn
    adapter: Adapter
    input_schema: JsonObject
    output_schema: JsonObject


class ToolRegistry:
    """Registered tools by name; see the module docstring for what a call goes through."""

    def __init__(self, resilience: Resilience) -> None:
        """Tools' adapters come from ``resilience`` (breakers shared per dependency)."""
        self._resilience = resilience
        self._tools: dict[str, Tool] = {}

    def add(self, spec: tool_pb2.ToolSpec, fn: ToolFn, *, dependency: str | None = None) -> None:
        """Register ``fn`` under ``spec``; ``dependency`` names the circuit breaker to share."""
        if spec.name in self._tools:
            raise ValueError(f"tool {spec.name} is already registered")
        if spec.side_effect == tool_pb2.SIDE_EFFECT_UNSPECIFIED:
            raise ValueError(f"tool {spec.name} declares no side effect")
        self._tools[spec.name] = Tool(
            spec=spec,
            fn=fn,
            adapter=self._resilience.for_tool(spec, dependency=dependency),
            input_schema=schema_of(spec.input_schema),
            output_schema=schema_of(spec.output_schema),
        )

    def __contains__(self, name: object) -> bool:
        """Whether a tool of that name is registered."""
        return name in self._tools

    def names(self) -> list[str]:
        """Registered tool names, sorted."""
        return sorted(self._tools)

    def get(self, name: str) -> Tool:
        """The tool called ``name``, or FAILED_PRECONDITION with reason TOOL_UNKNOWN."""
        tool = self._tools.get(name)
        if tool is None:
            raise errors.FailedPrecondition(
                f"tool {name!r} is not registered",
                reason=errors_pb2.ERROR_REASON_TOOL_UNKNOWN,
                metadata={"tool": name},
            )
        return tool

    def spec(self, name: str) -> tool_pb2.ToolSpec:
        """The ToolSpec of ``name``."""
        return self.get(name).spec

    def specs(self) -> list[tool_pb2.ToolSpec]:
        """Every registered ToolSpec, by name."""
        return [self._tools[name].spec for name in self.names()]

    def compensation_of(self, name: str) -> str | None:
        """The tool that undoes ``name``, if it declares one."""
        return self.get(name).spec.compensation_tool or None

    async def call(
        self, name: str, tenant_id: str, data: JsonObject, idempotency_key: str = ""
    ) -> JsonObject:
        """Run tool ``name`` for ``tenant_id`` on ``data`` under its policy; return its output."""
        tool = self.get(name)
        if not tenant_id:
            raise errors.Unauthenticated(
                "tool calls need a tenant", reason=errors_pb2.ERROR_REASON_TENANT_CONTEXT_MISSING
            )
        if tool.spec.idempotency.required and not idempotency_key:
            raise errors.InvalidArgument(
                f"tool {name} requires an idempotency key", field="idempotency_key"
            )
        _check(data, tool.input_schema, name, "input")
        output = await tool.adapter.call(
            lambda: tool.fn(tenant_id, data, idempotency_key), key=tenant_id
        )
        _check(output, tool.output_schema, name, "output")
        return output


def _check(value: JsonObject, json_schema: JsonObject, tool: str, what: str) -> None:
    found = list(schema.problems(value, json_schema))
    if not found:
        return
    text = "; ".join(f"{path} {message}" for path, message in found[:_MAX_REPORTED])
    if what == "input":
        raise errors.InvalidArgument(f"{tool} input: {text}", field=f"input.{found[0][0]}")
    raise errors.Internal(f"{tool} returned output its spec does not allow: {text}")
