"""crm.create_lead / update_lead_status / revert_lead_status against the CRM sandbox."""

from __future__ import annotations

import pytest

from services.kit import errors
from services.orchestrator.tools import ToolRegistry
from tests.integration.tools.conftest import Sandboxes, key


def leads_of(sandboxes: Sandboxes, tenant: str) -> list[dict[str, object]]:
    """The tenant's leads in the CRM."""
    return [
        lead for lead in sandboxes.crm.leads.values() if lead["metadata"]["tenant_id"] == tenant
    ]


async def test_create_lead_replayed_with_its_key_creates_one_lead(
    registry: ToolRegistry, sandboxes: Sandboxes, tenant: str
) -> None:
    lead = {"email": "ada@example.com", "name": "Ada", "source": "chat"}
    same = key("crm.create_lead", tenant)
    first = await registry.call("crm.create_lead", tenant, lead, same)
    assert await registry.call("crm.create_lead", tenant, lead, same) == first
    assert first["status"] == "new"
    assert first["change_id"]
    assert len(leads_of(sandboxes, tenant)) == 1


async def test_revert_restores_the_previous_status_once(
    registry: ToolRegistry, sandboxes: Sandboxes, tenant: str
) -> None:
    lead = await registry.call(
        "crm.create_lead", tenant, {"email": "b@example.com"}, key("crm.create_lead", tenant)
    )
    update = {"lead_id": lead["lead_id"], "status": "qualified"}
    update_key = key("crm.update_lead_status", tenant)
    moved = await registry.call("crm.update_lead_status", tenant, update, update_key)
    assert (moved["previous_status"], moved["status"]) == ("new", "qualified")
    assert await registry.call("crm.update_lead_status", tenant, update, update_key) == moved
    revert_key = key("crm.revert_lead_status", tenant)
    reverted = await registry.call("crm.revert_lead_status", tenant, moved, revert_key)
    assert reverted["status"] == "new"
    assert await registry.call("crm.revert_lead_status", tenant, moved, revert_key) == reverted
    again = await registry.call(
        "crm.revert_lead_status", tenant, moved, key("crm.revert_lead_status", tenant)
    )
    assert (again["status"], again["change_id"]) == ("new", "")
    stored = sandboxes.crm.leads[lead["lead_id"]]
    assert [entry["to_status"] for entry in stored["history"]] == ["new", "qualified", "new"]


async def test_reverting_a_creation_archives_the_lead(registry: ToolRegistry, tenant: str) -> None:
    lead = await registry.call(
        "crm.create_lead", tenant, {"email": "c@example.com"}, key("crm.create_lead", tenant)
    )
    reverted = await registry.call(
        "crm.revert_lead_status", tenant, lead, key("crm.revert_lead_status", tenant)
    )
    assert reverted["status"] == "archived"


async def test_a_superseded_change_is_not_reverted(registry: ToolRegistry, tenant: str) -> None:
    lead = await registry.call(
        "crm.create_lead", tenant, {"email": "d@example.com"}, key("crm.create_lead", tenant)
    )
    moved = await registry.call(
        "crm.update_lead_status", tenant, {"lead_id": lead["lead_id"], "status": "contacted"},
        key("crm.update_lead_status", tenant),
    )  # fmt: skip
    await registry.call(
        "crm.update_lead_status", tenant, {"lead_id": lead["lead_id"], "status": "converted"},
        key("crm.update_lead_status", tenant),
    )  # fmt: skip
    with pytest.raises(errors.FailedPrecondition):
        await registry.call(
            "crm.revert_lead_status", tenant, moved, key("crm.revert_lead_status", tenant)
        )


async def test_a_tenant_cannot_touch_another_tenants_lead(
    registry: ToolRegistry, tenant: str, other_tenant: str
) -> None:
    lead = await registry.call(
        "crm.create_lead", tenant, {"email": "e@example.com"}, key("crm.create_lead", tenant)
    )
    with pytest.raises(errors.NotFound):
        await registry.call(
            "crm.update_lead_status", other_tenant,
            {"lead_id": lead["lead_id"], "status": "archived"},
            key("crm.update_lead_status", other_tenant),
        )  # fmt: skip
