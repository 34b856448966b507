"""What one outcome changes in the tenant's counters (the Lua script applies these)."""

from services.router.store import DecisionRecord, Outcome, TenantState, increments
from supportmesh.spec.v1 import tier_pb2 as pb


def record(tier: int, arm: str = "") -> DecisionRecord:
    return DecisionRecord(
        decision_id="d1", tenant="acme", tier=tier, predictions=(0.4, 0.8, 0.95),
        policy_version="v1", intent="order", strict=False, cost_estimate=0.001,
        latency_estimate=400, arm=arm, canary_version="v2" if arm else "",
    )  # fmt: skip


def test_success_at_the_decided_tier() -> None:
    updates = increments(Outcome("k", record(pb.SLM_B), pb.SLM_B, True, True))
    assert updates == [(3, "2:n", 1.0), (3, "2:s", 1.0), (3, "2:m", 0.8)]


def test_escalation_counts_a_failure_below_and_the_outcome_above() -> None:
    updates = increments(Outcome("k", record(pb.SLM_A), pb.LLM, False, True))
    assert (3, "1:s", 0.0) in updates
    assert (3, "3:n", 1.0) in updates
    assert (3, "3:s", 1.0) in updates
    assert (3, "3:m", 0.95) in updates
    # SLM_A was tried first: its failure feeds the intent's historical failure rate.
    assert (4, "order:n", 1.0) in updates
    assert (4, "order:f", 1.0) in updates


def test_rule_decisions_teach_failure_rates_but_not_the_bandit() -> None:
    rules = DecisionRecord(**{**vars(record(pb.SLM_A)), "source": "rules"})
    updates = increments(Outcome("k", rules, pb.SLM_B, False, True))
    assert updates == [(4, "order:n", 1.0), (4, "order:f", 1.0)]


def test_canary_arms_are_counted() -> None:
    updates = increments(Outcome("k", record(pb.SLM_B, arm="canary"), pb.SLM_B, False, False))
    assert (5, "canary_n", 1.0) in updates
    assert (5, "canary_s", 0.0) in updates


def test_records_round_trip_through_json() -> None:
    original = record(pb.SLM_A, arm="stable")
    assert DecisionRecord.from_json(original.to_json()) == original


def test_failure_rate_of_an_intent() -> None:
    state = TenantState(failures={"order": (8.0, 2.0)})
    assert state.failure_rate("order") == 0.3
    assert state.failure_rate("faq") == 0.5
