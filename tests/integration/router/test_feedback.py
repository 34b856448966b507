"""Decide and Feedback over gRPC against real Valkey and PostgreSQL."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from services.kit import errors
from supportmesh.router.v1 import router_service_pb2 as pb
from supportmesh.spec.v1 import tier_pb2
from tests.integration.router.conftest import Harness, as_tenant

HARD = (
    "This is unacceptable! I was charged twice for #12345, one charge was partly refunded and "
    "my bank shows a pending reversal; work out how much I'm still owed."
)


async def decide(router: Harness, tenant: str, query: str, **kwargs: object) -> pb.DecideResponse:
    fields: dict[str, object] = {"tenant_id": tenant, **kwargs}
    request = pb.DecideRequest(query=query, **fields)  # type: ignore[arg-type]
    return await router.stub.Decide(request, timeout=5, metadata=as_tenant(tenant))


async def feedback(router: Harness, tenant: str, **fields: object) -> pb.FeedbackResponse:
    request = pb.FeedbackRequest(tenant_id=tenant, **fields)  # type: ignore[arg-type]
    return await router.stub.Feedback(request, timeout=5, metadata=as_tenant(tenant))


STRICT: dict[str, Any] = {
    "json_schema": {
        "type": "object",
        "properties": {"status": {"type": "string"}, "eta": {"type": "string"}},
        "additionalProperties": False,
    }
}


def outcome_counts(router: Harness) -> tuple[float, float]:
    """(outcomes, misroutes) this router process has applied so far."""
    outcomes = sum(
        router.metric("router_outcomes_total", {"tier": tier, "result": result})
        for tier in ("SLM_A", "SLM_B", "LLM")
        for result in ("success", "failure")
    )
    return outcomes, router.metric("router_misroutes_total")


async def test_feedback_is_applied_once_per_request_id(router: Harness) -> None:
    tenant = await router.tenant()
    decision = await decide(router, tenant, "Where is my order #12345?")
    assert decision.decision_id
    assert decision.policy_version
    await router.app.router.flush_decisions()
    assert await router.app.router.store.load_decision(decision.decision_id)  # type: ignore[union-attr]
    before = {
        name: router.metric(name)
        for name in (
            "router_expected_cost_usd_total", "router_actual_cost_usd_total",
            "router_expected_latency_ms_sum", "router_expected_latency_ms_count",
            "router_actual_latency_ms_sum", "router_actual_latency_ms_count",
        )
    }  # fmt: skip
    outcomes, misroutes = outcome_counts(router)
    report = {
        "request_id": "fb-1", "decision_id": decision.decision_id, "tier": decision.tier,
        "success": True, "validators_passed": True, "actual_cost": 0.0002,
        "actual_latency_ms": 170,
    }  # fmt: skip
    assert (await feedback(router, tenant, **report)).applied
    assert not (await feedback(router, tenant, **report)).applied
    # Another request id reporting the same decision and tier is the same outcome.
    assert not (await feedback(router, tenant, **{**report, "request_id": "fb-2"})).applied
    state = await router.app.router.store.tenant_state(tenant)  # type: ignore[union-attr]
    assert state.arms[decision.tier].trials == 1
    assert state.arms[decision.tier].successes == 1
    assert router.metric("router_decision_latency_ms_count") >= 1
    assert router.metric("router_decisions_total", {"tier": tier_pb2.Tier.Name(decision.tier),
                                                    "source": "bandit"}) >= 1  # fmt: skip
    decide_spans = [
        span
        for span in router.spans.get_finished_spans()
        if span.attributes
        and span.attributes.get("tenant_id") == tenant
        and span.attributes.get("tier")
    ]
    assert decide_spans
    assert decide_spans[0].attributes is not None
    assert decide_spans[0].attributes["tier"] == tier_pb2.Tier.Name(decision.tier)
    # Expected figures are the decision's own estimates, counted once with the actual ones.
    delta = {name: router.metric(name) - value for name, value in before.items()}
    assert delta["router_expected_cost_usd_total"] == pytest.approx(decision.cost_estimate)
    assert delta["router_actual_cost_usd_total"] == pytest.approx(0.0002)
    assert delta["router_expected_latency_ms_sum"] == decision.latency_estimate
    assert delta["router_actual_latency_ms_sum"] == 170
    assert delta["router_expected_latency_ms_count"] == 1
    assert delta["router_actual_latency_ms_count"] == 1
    # A first-time success: one more outcome, no more misroutes.
    assert outcome_counts(router) == (outcomes + 1, misroutes)
    assert router.metric("router_misroute_rate") == pytest.approx(misroutes / (outcomes + 1))


async def test_an_escalation_is_a_misroute_and_teaches_both_tiers(router: Harness) -> None:
    tenant = await router.tenant()
    decision = await decide(router, tenant, "Cancel order #55555.")
    assert decision.tier != tier_pb2.LLM
    outcomes, misroutes = outcome_counts(router)
    reply = await feedback(
        router, tenant, request_id="esc", decision_id=decision.decision_id, tier=tier_pb2.LLM,
        success=True, validators_passed=True,
    )  # fmt: skip
    assert reply.applied
    state = await router.app.router.store.tenant_state(tenant)  # type: ignore[union-attr]
    assert state.arms[decision.tier].successes == 0
    assert state.arms[tier_pb2.LLM].successes == 1
    assert outcome_counts(router) == (outcomes + 1, misroutes + 1)
    assert router.metric("router_misroute_rate") == pytest.approx((misroutes + 1) / (outcomes + 1))


async def strict_slm_a_decision(router: Harness, tenant: str, query: str) -> pb.DecideResponse:
    """A decision for SLM_A on a request whose answer must satisfy a strict JSON schema."""
    context = struct_pb2.Struct()
    context.update(STRICT)
    found = await decide(router, tenant, query, context=context, tier_preference=tier_pb2.FAST)
    assert found.tier == tier_pb2.SLM_A, found
    return found


async def test_a_strict_schema_slm_a_answer_stands_only_if_its_validators_pass(
    router: Harness,
) -> None:
    # Under the degrade switch an easy query goes to SLM_A without exploring, so the
    # decisions below are SLM_A ones whatever the bandit would draw.
    tenant = await router.tenant(prefer_slm=True)
    failing = await strict_slm_a_decision(router, tenant, "Track parcel 1Z12345678")
    passing = await strict_slm_a_decision(router, tenant, "Where is my parcel 1Z87654321?")
    # Its answer may not stand unvalidated: SLM_B, then the LLM, are next.
    assert list(failing.escalation_path) == [tier_pb2.SLM_B, tier_pb2.LLM]
    outcomes, misroutes = outcome_counts(router)
    reply = await feedback(
        router, tenant, request_id="invalid", decision_id=failing.decision_id,
        tier=tier_pb2.SLM_A, success=True, validators_passed=False,
    )  # fmt: skip
    assert reply.applied
    state = await router.app.router.store.tenant_state(tenant)  # type: ignore[union-attr]
    assert (state.arms[tier_pb2.SLM_A].trials, state.arms[tier_pb2.SLM_A].successes) == (1, 0)
    assert state.failures["tracking"] == (1.0, 1.0)
    assert outcome_counts(router) == (outcomes + 1, misroutes + 1)

    reply = await feedback(
        router, tenant, request_id="valid", decision_id=passing.decision_id,
        tier=tier_pb2.SLM_A, success=True, validators_passed=True,
    )  # fmt: skip
    assert reply.applied
    state = await router.app.router.store.tenant_state(tenant)  # type: ignore[union-attr]
    assert (state.arms[tier_pb2.SLM_A].trials, state.arms[tier_pb2.SLM_A].successes) == (2, 1)
    assert state.failures["tracking"] == (2.0, 1.0)
    assert outcome_counts(router) == (outcomes + 2, misroutes + 1)


async def test_a_low_judge_score_fails_a_reported_success(router: Harness) -> None:
    tenant = await router.tenant()
    rejections = router.metric("router_judge_rejections_total")
    results: dict[str, float] = {}
    cases = {"unjudged": {}, "good": {"judge_score": 0.9}, "poor": {"judge_score": 0.2},
             "zero": {"judged": True, "judge_score": 0.0}}  # fmt: skip
    for request_id, judged in cases.items():
        decision = await decide(router, tenant, "What are your opening hours?")
        before = await router.app.router.store.tenant_state(tenant)  # type: ignore[union-attr]
        arm = before.arms.get(decision.tier)
        successes = 0.0 if arm is None else arm.successes
        reply = await feedback(
            router, tenant, request_id=request_id, decision_id=decision.decision_id,
            tier=decision.tier, success=True, validators_passed=True, **judged,
        )  # fmt: skip
        assert reply.applied
        after = await router.app.router.store.tenant_state(tenant)  # type: ignore[union-attr]
        results[request_id] = after.arms[decision.tier].successes - successes
    assert results == {"unjudged": 1, "good": 1, "poor": 0, "zero": 0}
    assert router.metric("router_judge_rejections_total") == rejections + 2
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await feedback(
            router, tenant, request_id="off-scale", decision_id=decision.decision_id,
            tier=decision.tier, success=True, judge_score=1.5,
        )  # fmt: skip
    refused = errors.parse_rpc_error(caught.value)
    assert (refused.code, refused.reason, refused.metadata["field"]) == (
        grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", "judge_score",
    )  # fmt: skip


async def test_another_tenants_decision_reads_as_not_found(router: Harness) -> None:
    owner, other = await router.tenant(), await router.tenant()
    decision = await decide(router, owner, "Where is my parcel?")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await feedback(router, other, request_id="x", decision_id=decision.decision_id)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await decide(router, other, "hello", tenant_id=owner)
    assert errors.parse_rpc_error(caught.value).reason == "TENANT_MISMATCH"


async def test_plan_limits_come_from_postgres(router: Harness) -> None:
    tenant = await router.tenant("free")
    decision = await decide(router, tenant, HARD, tier_preference=tier_pb2.ACCURATE)
    assert decision.tier == tier_pb2.SLM_B
    assert list(decision.escalation_path) == []
    assert "plan allows SLM_A,SLM_B" in decision.reasoning


async def test_the_degrade_switch_keeps_hard_queries_on_slm_tiers(router: Harness) -> None:
    tenant = await router.tenant("pro", prefer_slm=True)
    context = struct_pb2.Struct()
    context.update({"channel": "email"})
    decision = await decide(router, tenant, HARD, context=context)
    assert decision.tier in (tier_pb2.SLM_A, tier_pb2.SLM_B)
    assert tier_pb2.LLM in decision.escalation_path
    assert "prefer_slm_tiers" in decision.reasoning
