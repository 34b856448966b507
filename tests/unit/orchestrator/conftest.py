"""Fixtures: the shipped workflows, port doubles and an engine on an in-memory checkpointer."""

from __future__ import annotations

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from services.orchestrator.workflow import Workflow, WorkflowEngine, load_workflows
from tests.unit.orchestrator.doubles import TOOL_SPECS, Doubles, no_sleep


@pytest.fixture(scope="session")
def workflows() -> dict[str, Workflow]:
    """The five shipped workflows, loaded against the mirrored tool registry."""
    return load_workflows(known_tools=TOOL_SPECS)


@pytest.fixture
def doubles() -> Doubles:
    """Fresh port doubles."""
    return Doubles()


@pytest.fixture
def engine(doubles: Doubles) -> WorkflowEngine:
    """An engine over the doubles, checkpointing in memory, backing off without sleeping."""
    return WorkflowEngine(doubles.ports, InMemorySaver(), sleep=no_sleep, jitter=lambda: 0.5)
