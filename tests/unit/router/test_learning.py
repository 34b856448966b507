"""How outcomes teach the router: judge scores, strict-schema validators, and the metrics.

The engine runs against an in-memory store that applies :func:`services.router.store.increments`
as the Valkey script does, so the counters the bandit and the failure rates read can be
checked without Valkey.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import pytest
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from services.kit import errors
from services.kit.telemetry import Telemetry
from services.router import canary, outcomes
from services.router.app import RouterSettings, build
from services.router.engine import EngineConfig, Report, Router, outcome_of
from services.router.metrics import RouterMetrics
from services.router.registry import PolicyRegistry
from services.router.servicer import judge_score
from services.router.store import Applied, DecisionRecord, Outcome, RouterStore, increments
from services.router.tenants import TenantPolicies
from supportmesh.events.v1 import events_pb2
from supportmesh.orchestrator.v1 import orchestrator_service_pb2 as orchestrator_pb
from supportmesh.router.v1 import router_service_pb2 as router_pb
from supportmesh.spec.v1 import tier_pb2 as pb

THRESHOLD = 0.5


class MemoryStore(RouterStore):
    """The store's contract over dicts: decisions, idempotency guards and counters."""

    def __init__(self) -> None:
        self.decisions: dict[str, DecisionRecord] = {}
        self.guards: set[str] = set()
        self.counters: defaultdict[str, defaultdict[str, float]] = defaultdict(
            lambda: defaultdict(float)
        )

    async def save_decisions(self, records: Sequence[DecisionRecord]) -> None:
        self.decisions.update((record.decision_id, record) for record in records)

    async def load_decision(self, decision_id: str) -> DecisionRecord | None:
        return self.decisions.get(decision_id)

    async def apply(self, outcome: Outcome) -> Applied:
        record = outcome.record
        guards = {outcome.idempotency_key, f"{record.decision_id}:{outcome.final_tier}"}
        if guards & self.guards:
            return Applied(False)
        self.guards |= guards
        keys = {3: "bandit", 4: "failures", 5: "canary"}
        for index, name, amount in increments(outcome):
            self.counters[keys[index]][name] += amount
        arms = self.counters["canary"]
        counts = canary.ArmCounts(
            *(int(arms[k]) for k in ("canary_n", "canary_s", "stable_n", "stable_s"))
        )
        return Applied(True, counts if record.arm else None)


def record(
    decision_id: str = "d1", *, tier: int = pb.SLM_A, strict: bool = False
) -> DecisionRecord:
    return DecisionRecord(
        decision_id=decision_id, tenant="acme", tier=tier, predictions=(0.7, 0.85, 0.95),
        policy_version="v1", intent="order", strict=strict, cost_estimate=0.0001,
        latency_estimate=400,
    )  # fmt: skip


def report(decision_id: str = "d1", **fields: object) -> Report:
    values: dict[str, object] = {
        "idempotency_key": f"k-{decision_id}",
        "decision_id": decision_id,
        "tenant": "acme",
        "final_tier": 0,
        "success": True,
        "validators_passed": True,
    }
    values.update(fields)
    return Report(**values)  # type: ignore[arg-type]


def make_router(*records: DecisionRecord) -> tuple[Router, MemoryStore, CollectorRegistry]:
    registry = CollectorRegistry()
    metrics = RouterMetrics(registry)
    store = MemoryStore()
    store.decisions.update((r.decision_id, r) for r in records)
    tenants = TenantPolicies(None, ttl_s=1, error_costs={}, default_cost=0.02)
    router = Router(
        PolicyRegistry(None, "", metrics),
        tenants,
        store,
        metrics,
        EngineConfig(judge_threshold=THRESHOLD),
    )
    return router, store, registry


def sample(registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float:
    value = registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


# The rule itself.


def test_an_unjudged_outcome_counts_as_reported() -> None:
    assert outcome_of(report(), record(), THRESHOLD).first_success
    failed = outcome_of(report(success=False), record(), THRESHOLD)
    assert (failed.first_success, failed.final_success) == (False, False)


def test_a_judge_score_below_the_threshold_fails_a_reported_success() -> None:
    poor = outcome_of(report(judge_score=0.49), record(), THRESHOLD)
    assert (poor.first_success, poor.final_success) == (False, False)
    zero = outcome_of(report(judge_score=0.0), record(), THRESHOLD)
    assert not zero.first_success
    at_threshold = outcome_of(report(judge_score=THRESHOLD), record(), THRESHOLD)
    assert (at_threshold.first_success, at_threshold.final_success) == (True, True)


def test_a_good_judge_score_does_not_rescue_a_failure() -> None:
    rescued = outcome_of(report(success=False, judge_score=1.0), record(), THRESHOLD)
    assert (rescued.first_success, rescued.final_success) == (False, False)


def test_a_poorly_judged_escalation_fails_the_final_tier_too() -> None:
    escalated = outcome_of(report(final_tier=pb.LLM, judge_score=0.2), record(), THRESHOLD)
    assert (escalated.final_tier, escalated.first_success, escalated.final_success) == (
        pb.LLM,
        False,
        False,
    )
    fine = outcome_of(report(final_tier=pb.LLM, judge_score=0.9), record(), THRESHOLD)
    assert (fine.first_success, fine.final_success) == (False, True)


def test_a_strict_schema_answer_stands_only_when_its_validators_pass() -> None:
    strict = record(tier=pb.SLM_A, strict=True)
    passing = outcome_of(report(validators_passed=True), strict, THRESHOLD)
    assert passing.first_success
    failing = outcome_of(report(validators_passed=False), strict, THRESHOLD)
    assert not failing.first_success
    # Without a strict schema the validators' result does not decide the outcome.
    assert outcome_of(report(validators_passed=False), record(), THRESHOLD).first_success


# Through the engine: counters and metrics.


async def test_a_poor_judge_score_teaches_the_bandit_and_the_failure_rate() -> None:
    router, store, registry = make_router(record("judged"), record("unjudged"))
    assert await router.learn(report("judged", judge_score=0.1))
    assert dict(store.counters["bandit"]) == {"1:n": 1.0, "1:s": 0.0, "1:m": 0.7}
    assert dict(store.counters["failures"]) == {"order:n": 1.0, "order:f": 1.0}
    assert sample(registry, "router_outcomes_total", {"tier": "SLM_A", "result": "failure"}) == 1
    assert sample(registry, "router_judge_rejections_total") == 1
    assert sample(registry, "router_misroute_rate") == 1.0
    # The same kind of outcome without a judge score is a success.
    assert await router.learn(report("unjudged"))
    assert store.counters["bandit"]["1:s"] == 1.0
    assert store.counters["failures"]["order:f"] == 1.0
    assert sample(registry, "router_judge_rejections_total") == 1
    assert sample(registry, "router_misroute_rate") == 0.5


async def test_a_judge_score_outside_the_scale_is_refused() -> None:
    router, store, _ = make_router(record())
    for score in (1.5, -0.1, float("nan")):
        with pytest.raises(errors.InvalidArgument) as caught:
            await router.learn(report(judge_score=score))
        assert caught.value.field == "judge_score"
    assert not store.guards
    assert not store.counters


async def test_strict_schema_slm_a_answers_that_fail_validation_are_misroutes() -> None:
    failing, passing = record("fail", strict=True), record("pass", strict=True)
    router, store, registry = make_router(failing, passing)
    assert await router.learn(report("fail", validators_passed=False))
    assert store.counters["bandit"]["1:s"] == 0.0
    assert dict(store.counters["failures"]) == {"order:n": 1.0, "order:f": 1.0}
    assert sample(registry, "router_misroutes_total") == 1
    assert await router.learn(report("pass", validators_passed=True))
    assert store.counters["bandit"]["1:n"] == 2.0
    assert store.counters["bandit"]["1:s"] == 1.0
    assert dict(store.counters["failures"]) == {"order:n": 2.0, "order:f": 1.0}
    assert sample(registry, "router_misroutes_total") == 1
    assert sample(registry, "router_misroute_rate") == 0.5


async def test_expected_and_actual_cost_and_latency_and_the_misroute_rate() -> None:
    first = record("a", tier=pb.SLM_A)
    second = DecisionRecord(**{**vars(record("b", tier=pb.SLM_B)), "cost_estimate": 0.0004,
                               "latency_estimate": 900})  # fmt: skip
    third = record("c", tier=pb.SLM_A)
    router, _, registry = make_router(first, second, third)
    assert await router.learn(report("a", actual_cost=0.0003, actual_latency_ms=250))
    assert sample(registry, "router_expected_cost_usd_total") == pytest.approx(0.0001)
    assert sample(registry, "router_actual_cost_usd_total") == pytest.approx(0.0003)
    assert sample(registry, "router_expected_latency_ms_count") == 1
    assert sample(registry, "router_expected_latency_ms_sum") == 400
    assert sample(registry, "router_expected_latency_ms_bucket", {"le": "200.0"}) == 0
    assert sample(registry, "router_expected_latency_ms_bucket", {"le": "400.0"}) == 1
    assert sample(registry, "router_actual_latency_ms_count") == 1
    assert sample(registry, "router_actual_latency_ms_sum") == 250
    assert sample(registry, "router_actual_latency_ms_bucket", {"le": "200.0"}) == 0
    assert sample(registry, "router_actual_latency_ms_bucket", {"le": "400.0"}) == 1
    assert sample(registry, "router_misroute_rate") == 0.0

    # An escalation from SLM_B to the LLM: a misroute, costed at what the decision expected.
    assert await router.learn(
        report("b", final_tier=pb.LLM, actual_cost=0.004, actual_latency_ms=1900)
    )
    assert sample(registry, "router_expected_cost_usd_total") == pytest.approx(0.0005)
    assert sample(registry, "router_actual_cost_usd_total") == pytest.approx(0.0043)
    assert sample(registry, "router_expected_latency_ms_sum") == 1300
    assert sample(registry, "router_actual_latency_ms_sum") == 2150
    assert sample(registry, "router_actual_latency_ms_bucket", {"le": "1200.0"}) == 1
    assert sample(registry, "router_actual_latency_ms_bucket", {"le": "2000.0"}) == 2
    assert sample(registry, "router_misroutes_total") == 1
    assert sample(registry, "router_misroute_rate") == 0.5

    # No actual cost or latency reported: the expected figures are not counted either.
    assert await router.learn(report("c", success=False))
    assert sample(registry, "router_expected_cost_usd_total") == pytest.approx(0.0005)
    assert sample(registry, "router_expected_latency_ms_count") == 2
    assert sample(registry, "router_actual_latency_ms_count") == 2
    assert sample(registry, "router_misroute_rate") == pytest.approx(2 / 3)
    # A repeated report changes nothing, the rate included.
    assert not await router.learn(report("c", success=False))
    assert sample(registry, "router_misroute_rate") == pytest.approx(2 / 3)
    assert sample(registry, "router_outcomes_total", {"tier": "SLM_A", "result": "failure"}) == 1


# Where judge scores come from.


def test_feedback_reads_a_judge_score_only_when_a_judge_ran() -> None:
    assert judge_score(router_pb.FeedbackRequest()) is None
    assert judge_score(router_pb.FeedbackRequest(judge_score=0.25)) == 0.25
    assert judge_score(router_pb.FeedbackRequest(judged=True)) == 0.0
    assert judge_score(router_pb.FeedbackRequest(judged=True, judge_score=0.75)) == 0.75


def test_run_events_carry_their_judge_score() -> None:
    event = events_pb2.RunEvent(
        tenant_id="t", run_id="r", decision_id="d", status=orchestrator_pb.RUN_STATUS_SUCCEEDED
    )
    unjudged = outcomes.report_of(event)
    assert unjudged is not None
    assert unjudged.judge_score is None
    event.judge_score = 0.0
    judged = outcomes.report_of(event)
    assert judged is not None
    assert judged.judge_score == 0.0


async def test_a_run_event_with_a_judge_score_off_the_scale_is_skipped() -> None:
    router, store, _ = make_router(record())
    event = events_pb2.RunEvent(
        tenant_id="acme", run_id="r", decision_id="d1", judge_score=7.0,
        status=orchestrator_pb.RUN_STATUS_SUCCEEDED,
    )  # fmt: skip
    # Acknowledged without learning: redelivering it could not make it valid.
    await outcomes.handler(router)(Msg(None, data=event.SerializeToString()))  # type: ignore[arg-type]
    assert not store.counters
    event.judge_score = 0.3
    await outcomes.handler(router)(Msg(None, data=event.SerializeToString()))  # type: ignore[arg-type]
    assert store.counters["bandit"]["1:s"] == 0.0
    assert store.counters["failures"]["order:f"] == 1.0


def test_the_judge_threshold_is_a_router_setting() -> None:
    assert RouterSettings().judge_threshold == 0.5
    with pytest.raises(ValidationError):
        RouterSettings(judge_threshold=1.5)
    app = build(RouterSettings(judge_threshold=0.7), Telemetry("router-unit"))
    assert app.router.config.judge_threshold == 0.7
