"""faq.yaml end to end: grounded answers, tier escalation on a failed gate, human hand-off."""

from __future__ import annotations

import pytest

from services.kit.errors import FailedPrecondition, InvalidArgument
from services.orchestrator.workflow import Passage, RouteDecision, Workflow, WorkflowEngine
from tests.unit.orchestrator.doubles import Doubles, FakeKnowledge

POLICY = "Returns are accepted within 30 days of delivery with the original receipt."
QUERY = {"query": "What is your returns policy?"}


@pytest.fixture
def faq(workflows: dict[str, Workflow], doubles: Doubles) -> Workflow:
    doubles.knowledge = FakeKnowledge(
        [Passage("chunk-1", POLICY, 0.82, "doc-1", "Returns policy", "kb://returns")]
    )
    return workflows["faq"]


async def test_a_grounded_answer_passes_at_the_first_tier(
    faq: Workflow, engine: WorkflowEngine, doubles: Doubles
) -> None:
    doubles.models.replies = {"SLM_A": POLICY}
    run = await engine.start(faq, tenant_id="acme", run_id="r1", input=QUERY)
    assert (run.status, run.answer, run.tier, run.degraded) == ("SUCCEEDED", POLICY, "SLM_A", False)
    assert doubles.models.tiers() == ["SLM_A"]
    assert doubles.models.critiques[0].tier == "SLM_B"  # the gate's critic_call
    assert [c["document_id"] for c in run.citations] == ["doc-1"]
    assert doubles.knowledge.queries == [QUERY["query"]]
    assert run.tokens == 120 + 40
    assert run.cost_usd == pytest.approx(0.0005 + 0.0004)


async def test_a_failed_gate_escalates_to_the_next_tier(
    faq: Workflow, engine: WorkflowEngine, doubles: Doubles
) -> None:
    doubles.models.replies = {
        "SLM_A": "You can return items within 90 days, no receipt needed.",
        "SLM_B": POLICY,
    }
    run = await engine.start(faq, tenant_id="acme", run_id="r2", input=QUERY)
    assert (run.status, run.answer, run.tier) == ("SUCCEEDED", POLICY, "SLM_B")
    # Early exit: the LLM tier on the router's path is never paid for.
    assert doubles.models.tiers() == ["SLM_A", "SLM_B"]
    repairs = run.state["repairs"]
    assert [(r["action"], r["from"], r["to"]) for r in repairs] == [("escalate", "SLM_A", "SLM_B")]
    assert "unsupported facts 90" in repairs[0]["message"]
    gates = [(g["validator"], g["passed"], g["tier"]) for g in run.state["gates"]]
    assert gates == [
        ("factuality", False, "SLM_A"),
        ("factuality", True, "SLM_B"),
        ("critic_call", True, "SLM_B"),
    ]


async def test_a_critic_below_threshold_also_escalates(
    faq: Workflow, engine: WorkflowEngine, doubles: Doubles
) -> None:
    doubles.models.replies = {"SLM_A": POLICY, "SLM_B": POLICY, "LLM": POLICY}
    doubles.models.critic["SLM_B"] = 0.5
    run = await engine.start(faq, tenant_id="acme", run_id="r3", input=QUERY)
    # Every answer is judged 0.5 < 0.8: SLM_A, SLM_B, LLM, one retry, then the human fallback.
    assert doubles.models.tiers() == ["SLM_A", "SLM_B", "LLM", "LLM"]
    assert [r["action"] for r in run.state["repairs"]] == [
        "escalate",
        "escalate",
        "retry",
        "fallback",
    ]
    assert run.status == "WAITING_FOR_HUMAN"
    assert run.human_request is not None
    assert run.human_request["step_id"] == "handoff"


async def test_no_tier_passing_hands_off_to_a_human_and_resumes(
    faq: Workflow, engine: WorkflowEngine, doubles: Doubles
) -> None:
    doubles.models.replies = dict.fromkeys(
        ("SLM_A", "SLM_B", "LLM"), "Shipping is free on orders over 50 EUR."
    )
    run = await engine.start(faq, tenant_id="acme", run_id="r4", input=QUERY)
    assert run.status == "WAITING_FOR_HUMAN"
    assert run.degraded
    waiting = run.human_request
    assert waiting is not None
    assert (waiting["queue"], waiting["ticket"]) == ("faq", "ticket-1")
    assert waiting["prompt"] == "A customer asked: What is your returns policy?"
    ((request, key),) = doubles.human.handoffs
    assert request.context["reason"] == "VALIDATION_FAILED"
    assert key.startswith("human.hand_off:acme:r4.handoff:")

    human = "Items can be returned within 30 days; bring the receipt."
    run = await engine.resume(
        faq, tenant_id="acme", run_id="r4", step_id="handoff", value={"answer": human}
    )
    assert (run.status, run.answer, run.degraded) == ("SUCCEEDED", human, False)
    assert run.human_request is None
    assert len(doubles.human.handoffs) == 1  # resuming does not queue the ticket again


async def test_nothing_found_goes_straight_to_a_human(
    workflows: dict[str, Workflow], engine: WorkflowEngine, doubles: Doubles
) -> None:
    run = await engine.start(workflows["faq"], tenant_id="acme", run_id="r5", input=QUERY)
    assert run.status == "WAITING_FOR_HUMAN"
    assert doubles.models.requests == []
    statuses = [(s["step_id"], s["status"]) for s in run.steps]
    assert statuses[-1] == ("handoff", "WAITING_FOR_HUMAN")

    with pytest.raises(FailedPrecondition, match="waits at step 'handoff'"):
        await engine.resume(
            workflows["faq"], tenant_id="acme", run_id="r5", step_id="answer", value={"answer": "x"}
        )
    with pytest.raises(InvalidArgument, match="'answer' is a required property"):
        await engine.resume(
            workflows["faq"], tenant_id="acme", run_id="r5", step_id="handoff", value={"note": "x"}
        )
    run = await engine.resume(
        workflows["faq"],
        tenant_id="acme",
        run_id="r5",
        step_id="handoff",
        value={"answer": "We accept returns for 30 days."},
    )
    assert (run.status, run.answer) == ("SUCCEEDED", "We accept returns for 30 days.")
    with pytest.raises(FailedPrecondition, match="is SUCCEEDED, not waiting"):
        await engine.resume(
            workflows["faq"],
            tenant_id="acme",
            run_id="r5",
            step_id="handoff",
            value={"answer": "again"},
        )


async def test_a_complaint_is_escalated_before_any_model_runs(
    faq: Workflow, engine: WorkflowEngine, doubles: Doubles
) -> None:
    doubles.router.decision = RouteDecision("LLM", (), 0.9, "complaint")
    run = await engine.start(faq, tenant_id="acme", run_id="r6", input={"query": "Awful!"})
    assert run.status == "WAITING_FOR_HUMAN"
    assert doubles.knowledge.queries == []
    assert doubles.models.requests == []


async def test_the_cost_budget_ends_the_run_gracefully(
    faq: Workflow, engine: WorkflowEngine, doubles: Doubles
) -> None:
    doubles.models.replies = {"SLM_A": "Returns within 90 days.", "SLM_B": POLICY}
    doubles.models.prices.update({"SLM_A": 0.04, "SLM_B": 0.08})
    run = await engine.start(faq, tenant_id="acme", run_id="r7", input=QUERY)
    assert (run.status, run.reason) == ("FAILED", "BUDGET_EXCEEDED")
    assert run.answer == faq.fallback.failure_message
    assert run.cost_usd == pytest.approx(0.12)
    assert "of $0.10" in run.message
    assert doubles.models.tiers() == ["SLM_A", "SLM_B"]  # nothing runs once it is spent


async def test_the_token_budget_ends_the_run_gracefully(
    faq: Workflow, engine: WorkflowEngine, doubles: Doubles
) -> None:
    doubles.models.replies = {"SLM_A": "Returns within 90 days.", "SLM_B": POLICY}
    doubles.models.tokens = 6000
    run = await engine.start(faq, tenant_id="acme", run_id="r8", input=QUERY)
    assert (run.status, run.reason, run.tokens) == ("FAILED", "BUDGET_EXCEEDED", 12_000)
    assert doubles.models.requests[1].max_tokens == 500  # min(step limit, 4000 tokens left)
    assert run.answer.startswith("Sorry, I couldn't answer that right now.")
    assert run.steps[-1]["reason"] == "BUDGET_EXCEEDED"
