"""The tool names workflows may call and the view of the tool registry the loader checks."""

from __future__ import annotations

from typing import Protocol

from supportmesh.spec.v1 import tool_pb2

# The registered names the shipped workflows use; the tools package registers exactly these.
# Compensation pairs: orders.create → orders.cancel, payment.charge → payment.refund,
# crm.create_lead / crm.update_lead_status → crm.revert_lead_status,
# mail.send → mail.send_cancellation (a corrective email, since mail cannot be unsent).
TOOL_NAMES: tuple[str, ...] = (
    "orders.create",
    "orders.get",
    "orders.cancel",
    "payment.charge",
    "payment.refund",
    "payment.capture",
    "crm.create_lead",
    "crm.update_lead_status",
    "crm.revert_lead_status",
    "mail.send",
    "mail.send_cancellation",
    "knowledge.search",
)

# Served by the KnowledgePort rather than the ToolPort: its passages feed the factuality gate.
KNOWLEDGE_SEARCH = "knowledge.search"

READ_ONLY = tool_pb2.SIDE_EFFECT_READ_ONLY
COMPENSATABLE = tool_pb2.SIDE_EFFECT_COMPENSATABLE
IRREVERSIBLE = tool_pb2.SIDE_EFFECT_IRREVERSIBLE


class ToolInfo(Protocol):
    """What the loader needs to know about a registered tool; ``spec.v1.ToolSpec`` fits."""

    @property
    def name(self) -> str:
        """The registered name, e.g. ``payment.charge``."""
        ...

    @property
    def side_effect(self) -> int:
        """A ``spec.v1.SideEffect`` value."""
        ...

    @property
    def compensation_tool(self) -> str:
        """The tool that undoes this one, or empty."""
        ...
