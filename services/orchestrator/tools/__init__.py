"""The orchestrator's tools: one module per third party, each tool with its ToolSpec.

``all_specs()`` lists every ToolSpec (to register in the control plane with
``ControlService.RegisterTool``); ``build_registry``/``open_registry`` wire the
implementations to their dependencies behind a :class:`ToolRegistry`, whose ``call`` runs a
tool through its resilience adapter.
"""

from services.orchestrator.tools.catalog import (
    TOOL_NAMES,
    ToolsConfig,
    all_specs,
    build_registry,
    open_registry,
)
from services.orchestrator.tools.mail import SmtpConfig
from services.orchestrator.tools.registry import Tool, ToolRegistry
from services.orchestrator.tools.spec import JsonObject, ToolFn

__all__ = [
    "TOOL_NAMES",
    "JsonObject",
    "SmtpConfig",
    "Tool",
    "ToolFn",
    "ToolRegistry",
    "ToolsConfig",
    "all_specs",
    "build_registry",
    "open_registry",
]
