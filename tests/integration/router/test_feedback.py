"""Decide and Feedback over gRPC against real Valkey and PostgreSQL."""

from __future__ import annotations

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


async def test_feedback_is_applied_once_per_request_id(router: Harness) -> None:
    tenant = await router.tenant()
    decision = await decide(router, tenant, "Where is my order #12345?")
    assert decision.decision_id
    assert decision.policy_version
    await router.app.router.flush_decisions()
    assert await router.app.router.store.load_decision(decision.decision_id)  # type: ignore[union-attr]
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
    assert router.metric("router_actual_cost_usd_total") >= 0.0002
    assert router.metric("router_misroute_rate") >= 0


async def test_an_escalation_is_a_misroute_and_teaches_both_tiers(router: Harness) -> None:
    tenant = await router.tenant()
    decision = await decide(router, tenant, "Cancel order #55555.")
    assert decision.tier != tier_pb2.LLM
    misroutes = router.metric("router_misroutes_total")
    reply = await feedback(
        router, tenant, request_id="esc", decision_id=decision.decision_id, tier=tier_pb2.LLM,
        success=True, validators_passed=True,
    )  # fmt: skip
    assert reply.applied
    state = await router.app.router.store.tenant_state(tenant)  # type: ignore[union-attr]
    assert state.arms[decision.tier].successes == 0
    assert state.arms[tier_pb2.LLM].successes == 1
    assert router.metric("router_misroutes_total") == misroutes + 1


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
