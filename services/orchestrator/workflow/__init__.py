"""The workflow engine: YAML workflows validated, compiled to LangGraph and run durably.

The service layer loads workflows (:func:`load_workflows`), plugs its clients in as
:class:`Ports`, and drives runs through :class:`WorkflowEngine` with a checkpointer.
"""

from services.orchestrator.workflow.catalog import KNOWLEDGE_SEARCH, TOOL_NAMES, ToolInfo
from services.orchestrator.workflow.context import WorkflowContext
from services.orchestrator.workflow.engine import RunView, WorkflowEngine, run_config, thread_id
from services.orchestrator.workflow.errors import Issue, WorkflowError
from services.orchestrator.workflow.expressions import (
    Expression,
    ExpressionError,
    parse_expression,
)
from services.orchestrator.workflow.factuality import FactualityReport, check_factuality
from services.orchestrator.workflow.graph import RunGraph, build_graph
from services.orchestrator.workflow.loader import load_workflow, load_workflow_file, load_workflows
from services.orchestrator.workflow.model import Tier, Workflow
from services.orchestrator.workflow.ports import (
    CallContext,
    Critique,
    CritiqueRequest,
    Generation,
    GenerationRequest,
    HumanPort,
    HumanRequest,
    KnowledgePort,
    ModelPort,
    Passage,
    Ports,
    RouteDecision,
    RouterPort,
    ToolCallError,
    ToolEvent,
    ToolPort,
)
from services.orchestrator.workflow.schema import SCHEMA_PATH, WORKFLOWS_DIR, schema_validator
from services.orchestrator.workflow.state import RunState

__all__ = [
    "KNOWLEDGE_SEARCH",
    "SCHEMA_PATH",
    "TOOL_NAMES",
    "WORKFLOWS_DIR",
    "CallContext",
    "Critique",
    "CritiqueRequest",
    "Expression",
    "ExpressionError",
    "FactualityReport",
    "Generation",
    "GenerationRequest",
    "HumanPort",
    "HumanRequest",
    "Issue",
    "KnowledgePort",
    "ModelPort",
    "Passage",
    "Ports",
    "RouteDecision",
    "RouterPort",
    "RunGraph",
    "RunState",
    "RunView",
    "Tier",
    "ToolCallError",
    "ToolEvent",
    "ToolInfo",
    "ToolPort",
    "Workflow",
    "WorkflowContext",
    "WorkflowEngine",
    "WorkflowError",
    "build_graph",
    "check_factuality",
    "load_workflow",
    "load_workflow_file",
    "load_workflows",
    "parse_expression",
    "run_config",
    "schema_validator",
    "thread_id",
]
