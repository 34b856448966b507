"""The ports a run calls out through; the service layer plugs real clients in behind them."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from services.orchestrator.workflow.model import Tier


@dataclass(frozen=True)
class CallContext:
    """Who an outbound call is for and when it must be done by."""

    tenant_id: str
    run_id: str
    user_id: str
    workflow: str
    step_id: str
    deadline: float  # on the time.monotonic() clock

    def timeout_s(self) -> float:
        """Seconds left before the step's wall budget runs out (the call's deadline)."""
        return max(0.0, self.deadline - time.monotonic())


@dataclass(frozen=True)
class RouteDecision:
    """The router's answer: the tier to try first and where to escalate on a failed gate."""

    tier: Tier
    escalation_path: tuple[Tier, ...] = ()
    confidence: float = 1.0
    intent: str = ""
    decision_id: str = ""


@dataclass(frozen=True)
class Passage:
    """A retrieved knowledge passage."""

    id: str
    text: str
    score: float
    document_id: str = ""
    title: str = ""
    uri: str = ""


@dataclass(frozen=True)
class GenerationRequest:
    """What a model tier is asked to produce."""

    tier: Tier
    prompt: str
    system_prompt: str
    passages: tuple[Passage, ...]
    tool_results: Mapping[str, Any]
    max_tokens: int
    temperature: float
    json_output: bool


@dataclass(frozen=True)
class Generation:
    """A model's reply with what it cost; ``score`` is the tier's confidence when it has one."""

    text: str
    tokens: int
    cost_usd: float
    score: float | None = None


@dataclass(frozen=True)
class CritiqueRequest:
    """An answer for a critic tier to score against the evidence."""

    tier: Tier
    question: str
    answer: str
    evidence: tuple[str, ...]
    rubric: str
    max_tokens: int


@dataclass(frozen=True)
class Critique:
    """The critic's score in [0, 1] and why, with what it cost."""

    score: float
    reason: str
    tokens: int
    cost_usd: float


@dataclass(frozen=True)
class HumanRequest:
    """A hand-off to a human queue."""

    step_id: str
    queue: str
    prompt: str
    channels: tuple[str, ...]
    input_schema: Mapping[str, Any] | None
    context: Mapping[str, Any]


ToolPhase = Literal["requested", "succeeded", "failed", "compensated"]


@dataclass(frozen=True)
class ToolEvent:
    """A tool call's progress: the hook for write-ahead ``tool.call.*`` events."""

    phase: ToolPhase
    tool: str
    step_id: str
    idempotency_key: str
    attempt: int
    arguments: Mapping[str, Any]
    output: Mapping[str, Any] | None = None
    error: str = ""
    compensates: str = ""  # the step whose effect this call undoes, for compensations
    # False for a read-only call: no effect outside follows the request, so the service may
    # store ``requested`` together with the outcome instead of ahead of the call.
    write_ahead: bool = True


class ToolCallError(Exception):
    """A tool call that failed; ``reason`` is an ErrorReason wire name."""

    def __init__(
        self, message: str, *, retryable: bool = False, reason: str = "DEPENDENCY_UNAVAILABLE"
    ) -> None:
        """Say whether trying again may help."""
        super().__init__(message)
        self.retryable = retryable
        self.reason = reason


class RouterPort(Protocol):
    """The router service."""

    async def decide(
        self, call: CallContext, query: str, context: Mapping[str, Any], preference: str
    ) -> RouteDecision:
        """Pick the tier for ``query``."""
        ...


class ToolPort(Protocol):
    """Registered tools, with a hook around every call for write-ahead events."""

    # record() runs before and after each call, so the service can write
    # tool.call.requested ahead of the side effect and the outcome after it.

    async def call(
        self, call: CallContext, tool: str, arguments: Mapping[str, Any], idempotency_key: str
    ) -> Mapping[str, Any]:
        """Run ``tool`` once; the key makes a repeated call a no-op for the provider."""
        ...

    async def record(self, call: CallContext, event: ToolEvent) -> None:
        """Note a call's progress (requested, succeeded, failed, compensated)."""
        ...


class ModelPort(Protocol):
    """Model tiers."""

    async def generate(self, call: CallContext, request: GenerationRequest) -> Generation:
        """Produce text at ``request.tier``."""
        ...

    async def critique(self, call: CallContext, request: CritiqueRequest) -> Critique:
        """Score an answer at ``request.tier``."""
        ...


class KnowledgePort(Protocol):
    """The knowledge service's search."""

    async def search(
        self, call: CallContext, query: str, top_k: int, min_score: float
    ) -> Sequence[Passage]:
        """The best passages for ``query`` in the tenant's knowledge base."""
        ...


class HumanPort(Protocol):
    """Human support queues."""

    async def hand_off(self, call: CallContext, request: HumanRequest, idempotency_key: str) -> str:
        """Queue the request for a human; returns a ticket id."""
        ...


@dataclass(frozen=True)
class Ports:
    """Every port a run uses."""

    router: RouterPort
    tools: ToolPort
    models: ModelPort
    knowledge: KnowledgePort
    human: HumanPort
