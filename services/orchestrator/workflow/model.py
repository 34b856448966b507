"""The typed statements a workflow file becomes: frozen, validated, ready to interpret."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from services.orchestrator.workflow.expressions import Expression
from services.orchestrator.workflow.templates import Template

Tier = Literal["SLM_A", "SLM_B", "LLM"]
TIERS: tuple[Tier, ...] = ("SLM_A", "SLM_B", "LLM")
_TIER_BY_NAME: Mapping[str, Tier] = {tier: tier for tier in TIERS}
SideEffect = Literal["read_only", "compensatable", "irreversible"]
FailureAction = Literal["compensate", "fallback", "continue", "goto"]
# The target of a jump that ends the run (Commit).
END = "end"
# The gate target that checks the run's input.
INPUT = "input"


def as_tier(name: str | None) -> Tier:
    """The tier called ``name``; without a router decision the most capable tier answers."""
    return _TIER_BY_NAME.get(name or "", "LLM")


@dataclass(frozen=True)
class OnFailure:
    """What Repair does when a step still fails after its retries and tier escalations."""

    action: FailureAction
    target: str | None = None  # the step to jump to when action is "goto"


@dataclass(frozen=True)
class StepBase:
    """What every step has."""

    id: str
    line: int
    condition: Expression | None
    next: str | None  # a later step id, END, or None for the following step
    on_failure: OnFailure
    wall_ms: int


@dataclass(frozen=True)
class RouterStep(StepBase):
    """Ask the router which model tier answers, and along which path to escalate."""

    kind: ClassVar[str] = "router"
    query: Template
    tier_preference: str


@dataclass(frozen=True)
class ToolStep(StepBase):
    """Call a registered tool; side effects are recorded for compensation."""

    kind: ClassVar[str] = "tool"
    tool: str
    input: Template
    side_effect: SideEffect


@dataclass(frozen=True)
class LlmStep(StepBase):
    """Generate text (or JSON) at the run's tier, grounded on passages and tool results."""

    kind: ClassVar[str] = "llm"
    prompt: Template
    system_prompt: str
    tier: Tier | None  # a fixed tier; None follows the router and may escalate
    max_tokens: int
    temperature: float
    json_output: bool
    answer: bool  # whether the text is the customer-facing answer


@dataclass(frozen=True)
class ConditionStep(StepBase):
    """Jump forward to ``then`` or ``otherwise`` depending on ``test``."""

    kind: ClassVar[str] = "condition"
    test: Expression
    then: str
    otherwise: str | None


@dataclass(frozen=True)
class EscalationStep(StepBase):
    """Hand the run to a human and wait for their input."""

    kind: ClassVar[str] = "escalation"
    queue: str
    prompt: Template
    channels: tuple[str, ...]
    input_schema: Mapping[str, Any] | None


@dataclass(frozen=True)
class JsonSchemaCheck:
    """The checked value must satisfy a JSON Schema (draft 2020-12)."""

    schema: Mapping[str, Any]
    value: Expression | None


@dataclass(frozen=True)
class ScoreThreshold:
    """The checked score must be at least ``min``."""

    min: float
    value: Expression | None


@dataclass(frozen=True)
class FactualityCheck:
    """Every answer sentence must be supported by retrieved passages or tool results."""

    min_overlap: float
    min_supported: float


@dataclass(frozen=True)
class CriticCall:
    """A model tier scores the answer; skipped when no tier is configured."""

    tier: Tier | None
    min: float
    rubric: str


Validator = JsonSchemaCheck | ScoreThreshold | FactualityCheck | CriticCall


@dataclass(frozen=True)
class GateStep(StepBase):
    """Verify a step's output (or the input) with validators; failure triggers Repair."""

    kind: ClassVar[str] = "gate"
    target: str  # a step id or INPUT
    validators: tuple[Validator, ...]


Step = RouterStep | ToolStep | LlmStep | ConditionStep | EscalationStep | GateStep


@dataclass(frozen=True)
class Compensation:
    """The tool that undoes a step, with its input (None: the step's input and output merged)."""

    step: str
    tool: str
    input: Template | None


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts per step (tool and model calls, and Repair retries of a failed gate)."""

    max_attempts: int = 1
    backoff_factor: float = 2.0
    initial_backoff_ms: int = 200
    max_backoff_ms: int = 5000


@dataclass(frozen=True)
class Fallback:
    """What the run does when Repair gives up, and what a failed run answers."""

    action: Literal["generic_response", "escalate"] = "generic_response"
    message: str = (
        "I couldn't put together a reliable answer right now. "
        "A member of our support team will follow up with you."
    )
    failure_message: str = (
        "Sorry, I couldn't complete this request right now. "
        "A member of our support team will follow up with you."
    )
    step: str | None = None


@dataclass(frozen=True)
class Budgets:
    """Limits: wall time per step, model tokens per request, cost per execution."""

    wall_ms: int = 5000
    tokens: int = 10_000
    cost_usd: float = 0.10


@dataclass(frozen=True)
class Trigger:
    """How a run of the workflow starts."""

    type: Literal["webhook", "websocket", "api", "event"]
    endpoint: str = ""
    method: str = ""
    event: str = ""
    subject: str = ""


@dataclass(frozen=True)
class Workflow:
    """A validated workflow definition."""

    name: str
    version: str
    description: str
    steps: tuple[Step, ...]
    triggers: tuple[Trigger, ...] = ()
    compensations: Mapping[str, Compensation] = field(default_factory=dict)
    retry: RetryPolicy = RetryPolicy()
    fallback: Fallback = Fallback()
    budgets: Budgets = Budgets()
    output: Template | None = None
    source: str = "<workflow>"

    def index(self, step_id: str) -> int:
        """The position of ``step_id``; END is one past the last step."""
        if step_id == END:
            return len(self.steps)
        for position, step in enumerate(self.steps):
            if step.id == step_id:
                return position
        raise KeyError(step_id)

    def step(self, step_id: str) -> Step:
        """The step named ``step_id``."""
        return self.steps[self.index(step_id)]

    def following(self, step: Step) -> int:
        """Where the run goes after ``step`` succeeds: its ``next`` or the following step."""
        if step.next is not None:
            return self.index(step.next)
        return self.index(step.id) + 1
