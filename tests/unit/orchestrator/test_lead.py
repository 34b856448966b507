"""lead.yaml end to end: CRM capture, follow-up, JSON qualification behind a gate."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest

from services.orchestrator.workflow import Tier, ToolCallError, Workflow, WorkflowEngine
from tests.unit.orchestrator.doubles import Doubles, Reply
from tests.unit.orchestrator.samples import LEAD
from tests.unit.orchestrator.samples import LEAD_REPLY as REPLY


def qualification(qualified: bool, confidence: float) -> str:
    return json.dumps(
        {
            "qualified": qualified,
            "segment": "enterprise",
            "confidence": confidence,
            "reason": "200 agents",
        }
    )


def replies(qualify: Mapping[Tier, str]) -> dict[Tier, Reply]:
    """Per tier: the qualification JSON for the qualify step, the thank-you otherwise."""

    def reply_for(tier: Tier) -> Reply:
        return lambda request: qualify[tier] if request.json_output else REPLY

    return {tier: reply_for(tier) for tier in qualify}


@pytest.fixture
def lead(workflows: dict[str, Workflow]) -> Workflow:
    return workflows["lead"]


async def test_a_qualified_lead_is_marked_in_the_crm(
    lead: Workflow, engine: WorkflowEngine, doubles: Doubles
) -> None:
    good = qualification(True, 0.92)
    doubles.models.replies = replies({"SLM_A": good})
    run = await engine.start(lead, tenant_id="acme", run_id="l1", input=LEAD)
    assert (run.status, run.answer) == ("SUCCEEDED", REPLY)
    assert doubles.tools.names() == ["crm.create_lead", "mail.send", "crm.update_lead_status"]
    assert doubles.tools.calls[0].arguments == {
        "email": "grace@example.com",
        "name": "Grace",
        "company": "Navy",
        "source": "chat",
    }
    assert doubles.tools.calls[2].arguments == {"lead_id": "lead_1", "status": "qualified"}
    assert run.output == {"lead_id": "lead_1", "qualified": True, "segment": "enterprise"}


async def test_malformed_json_escalates_to_the_next_tier(
    lead: Workflow, engine: WorkflowEngine, doubles: Doubles
) -> None:
    doubles.models.replies = replies(
        {"SLM_A": "qualified: yes!", "SLM_B": qualification(True, 0.9)}
    )
    run = await engine.start(lead, tenant_id="acme", run_id="l2", input=LEAD)
    assert run.status == "SUCCEEDED"
    assert doubles.models.tiers()[:2] == ["SLM_A", "SLM_B"]
    assert run.state["outputs"]["qualify"]["tier"] == "SLM_B"
    assert "crm.update_lead_status" in doubles.tools.names()


async def test_an_unsure_qualification_leaves_the_lead_for_a_person(
    lead: Workflow, engine: WorkflowEngine, doubles: Doubles
) -> None:
    unsure = qualification(True, 0.4)
    doubles.models.replies = replies(dict.fromkeys(("SLM_A", "SLM_B", "LLM"), unsure))
    run = await engine.start(lead, tenant_id="acme", run_id="l3", input=LEAD)
    # The gate fails at every tier and once more on retry, then the run continues.
    assert (run.status, run.answer, run.degraded) == ("SUCCEEDED", REPLY, False)
    assert doubles.tools.names() == ["crm.create_lead", "mail.send"]
    assert [s["status"] for s in run.steps if s["step_id"] == "mark_qualified"] == ["SKIPPED"]


async def test_a_failed_follow_up_reverts_the_lead(
    lead: Workflow, engine: WorkflowEngine, doubles: Doubles
) -> None:
    doubles.tools.fail("mail.send", ToolCallError("mailbox does not exist"))
    run = await engine.start(lead, tenant_id="acme", run_id="l4", input={"email": "x@example.com"})
    assert run.status == "COMPENSATED"
    assert doubles.tools.calls[0].arguments["name"] == ""  # `input.name or ''`
    revert = doubles.tools.calls[-1]
    assert (revert.tool, revert.arguments) == (
        "crm.revert_lead_status",
        {"lead_id": "lead_1", "change_id": "c1"},
    )
