"""CRM tools: create a lead, change its status, revert a status change, over HTTP.

Each status change answers with the history entry it made (``change_id``), which is what
the revert needs: ``crm.revert_lead_status`` takes the forward tool's output and restores
the status that change replaced, once — reverting an already reverted change is a no-op
success. Leads carry the tenant in their metadata and a tenant can only touch its own.
"""

from __future__ import annotations

from datetime import timedelta

from services.kit import errors
from services.orchestrator.tools.http import JsonClient, provider_code
from services.orchestrator.tools.spec import (
    COMPENSATABLE,
    IRREVERSIBLE,
    JsonObject,
    ToolFn,
    obj,
    tool_spec,
)
from supportmesh.spec.v1 import tool_pb2

DEPENDENCY = "crm"
STATUSES = ["new", "contacted", "qualified", "unqualified", "converted", "archived"]
_LEAD_ID = {"type": "string", "minLength": 1, "maxLength": 255}
_STATUS = {"type": "string", "enum": STATUSES}
_OUT = obj(
    {
        "lead_id": _LEAD_ID,
        "status": _STATUS,
        "previous_status": {"type": "string"},
        "change_id": {"type": "string"},
    },
    ("lead_id", "status", "previous_status", "change_id"),
)


def specs() -> list[tool_pb2.ToolSpec]:
    """The CRM tools' specs."""
    create_in = obj(
        {
            "email": {"type": "string", "format": "email", "maxLength": 320},
            "name": {"type": "string", "maxLength": 200},
            "company": {"type": "string", "maxLength": 200},
            "source": {"type": "string", "maxLength": 100},
            "status": _STATUS,
        },
        ("email",),
    )
    update_in = obj({"lead_id": _LEAD_ID, "status": _STATUS}, ("lead_id", "status"))
    revert_in = obj(
        {"lead_id": _LEAD_ID, "change_id": {"type": "string", "maxLength": 255}},
        ("lead_id", "change_id"),
        closed=False,
    )
    return [
        _spec("crm.create_lead", "Capture a lead in the CRM.", create_in, COMPENSATABLE),
        _spec("crm.update_lead_status", "Move a lead to another status.", update_in, COMPENSATABLE),
        _spec(
            "crm.revert_lead_status",
            "Undo one status change of a lead (a creation archives the lead), at most once.",
            revert_in,
            IRREVERSIBLE,
        ),
    ]


def _spec(
    name: str,
    description: str,
    input_schema: JsonObject,
    side_effect: tool_pb2.SideEffect.ValueType,
) -> tool_pb2.ToolSpec:
    compensation = "crm.revert_lead_status" if side_effect == COMPENSATABLE else ""
    return tool_spec(
        name, description, input_schema=input_schema, output_schema=_OUT,
        side_effect=side_effect, compensation=compensation, timeout_s=10.0,
        retention=timedelta(hours=24), max_concurrency=8,
    )  # fmt: skip


def _out(lead: JsonObject) -> JsonObject:
    change = lead.get("change") or {}
    return {
        "lead_id": lead["id"],
        "status": lead["status"],
        "previous_status": change.get("from_status") or "",
        "change_id": change.get("change_id", ""),
    }


class CrmTools:
    """The CRM tools' implementations over one provider client."""

    def __init__(self, client: JsonClient) -> None:
        """Call the CRM through ``client``."""
        self._client = client

    def bindings(self) -> dict[str, ToolFn]:
        """Implementation by tool name."""
        return {
            "crm.create_lead": self.create_lead,
            "crm.update_lead_status": self.update_lead_status,
            "crm.revert_lead_status": self.revert_lead_status,
        }

    async def create_lead(self, tenant_id: str, data: JsonObject, key: str) -> JsonObject:
        """Create a lead for the tenant."""
        body = {**data, "metadata": {"tenant_id": tenant_id}}
        lead = await self._client.request("POST", "/v1/leads", body=body, idempotency_key=key)
        return _out(lead)

    async def update_lead_status(self, tenant_id: str, data: JsonObject, key: str) -> JsonObject:
        """Set a lead's status; an unchanged status makes no history entry (change_id '')."""
        lead = await self._own_lead(tenant_id, str(data["lead_id"]))
        path = f"/v1/leads/{lead['id']}"
        body = {"status": data["status"]}
        return _out(await self._client.request("PATCH", path, body=body, idempotency_key=key))

    async def revert_lead_status(self, tenant_id: str, data: JsonObject, key: str) -> JsonObject:
        """Restore the status before change ``change_id``, unless that was done already."""
        lead = await self._own_lead(tenant_id, str(data["lead_id"]))
        change_id = str(data.get("change_id", ""))
        unchanged = {"lead_id": lead["id"], "status": lead["status"], "previous_status": "",
                     "change_id": ""}  # fmt: skip
        if not change_id:
            return unchanged  # the forward call changed nothing
        path = f"/v1/leads/{lead['id']}"
        body = {"reverts": change_id}
        try:
            reverted = await self._client.request("PATCH", path, body=body, idempotency_key=key)
        except errors.FailedPrecondition as error:
            if provider_code(error) != "change_already_reverted":
                raise  # change_superseded: the status moved on; a person has to decide
            return unchanged
        return _out(reverted)

    async def _own_lead(self, tenant_id: str, lead_id: str) -> JsonObject:
        """The lead, or NOT_FOUND when it is not this tenant's."""
        lead = await self._client.request("GET", f"/v1/leads/{lead_id}")
        if (lead.get("metadata") or {}).get("tenant_id") != tenant_id:
            raise errors.NotFound(f"lead {lead_id} not found", metadata={"lead_id": lead_id})
        return lead
