"""Route decisions asked ahead: a fresh run's router call starts with the run, not at its turn.

Before a run's router step gets its turn, LangGraph runs the plan step and any input gates,
each a super-step of bookkeeping, and the router call is the first port call of most
workflows. When the router step a fresh run reaches first, and the query it will send, are
already certain as the run starts, the engine asks the router then, concurrently with those
super-steps, and the step awaits that answer instead of asking again.

Certain means: only gates on the run's input come before the router step, none with a
condition, each holding only JSON Schema checks of the input itself, which the input passes;
and neither the router step's condition nor its query reads anything but the input. So a
decision asked ahead is the one the step would have asked for, and none is asked for a run
that never reaches its router step (a failing input gate sends the run to repair instead).

:class:`~services.orchestrator.runs.Runs` asks even earlier, as it writes a new run's row,
with the id it is about to insert. When the row turns out to exist already (a retry of the
same request) or the tenant pins another version, that call is dropped: a router decision
is read-only work, like the ones a recovered run asks again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.orchestrator.workflow import model
from services.orchestrator.workflow.gates import schema_problem
from services.orchestrator.workflow.ports import RouteDecision
from services.orchestrator.workflow.state import RunState, scope
from services.orchestrator.workflow.work import as_text

# What a query may read to be known at the run's start: the input and what comes with it.
_INPUT_NAMES = frozenset({"input", "query", "context"})


@dataclass(frozen=True)
class Ask:
    """One router call: the step asking and what it sends."""

    step_id: str
    query: str
    context: Mapping[str, Any]
    preference: str


@dataclass(frozen=True)
class Ahead:
    """A router call started with the run, for the step that will ask it."""

    ask: Ask
    decision: asyncio.Task[RouteDecision]

    def answer(
        self, step_id: str, query: str, context: Mapping[str, Any], preference: str
    ) -> asyncio.Task[RouteDecision] | None:
        """The decision under way when it answers exactly this call; otherwise it is dropped."""
        if Ask(step_id, query, context, preference) == self.ask:
            return self.decision
        self.drop()
        return None

    def drop(self) -> None:
        """Stop waiting for a decision no step will read."""
        self.decision.cancel()
        self.decision.add_done_callback(_retrieved)


def _retrieved(task: asyncio.Task[RouteDecision]) -> None:
    # A dropped call's failure is nobody's business; reading it keeps asyncio quiet.
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.exception()


def first_route(workflow: model.Workflow, state: RunState) -> tuple[model.RouterStep, Ask] | None:
    """The router step a fresh run with ``state`` reaches first and its call, when certain."""
    values = scope(state)
    cursor = 0
    while cursor < len(workflow.steps):
        step = workflow.steps[cursor]
        if step.condition is not None:
            return None
        if isinstance(step, model.RouterStep):
            if not step.query.names() <= _INPUT_NAMES:
                return None
            context = values["context"] if isinstance(values["context"], Mapping) else {}
            query = as_text(step.query.render(values))
            return step, Ask(step.id, query, context, step.tier_preference)
        if not isinstance(step, model.GateStep) or step.target != model.INPUT:
            return None
        for validator in step.validators:
            if not isinstance(validator, model.JsonSchemaCheck) or validator.value is not None:
                return None
            if schema_problem(validator.schema, values["input"]) is not None:
                return None
        cursor = workflow.following(step)
    return None
