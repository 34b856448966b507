"""Plan limits, flags and switches as the router reads them, and what it does without them."""

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from services.kit import db
from services.kit.stack import free_port
from services.router.app import SHIPPED_MODEL
from services.router.engine import EngineConfig, Router
from services.router.metrics import RouterMetrics
from services.router.registry import PolicyRegistry
from services.router.store import RouterStore
from services.router.tenants import TenantPolicies, policy_from_row
from supportmesh.spec.v1 import tier_pb2 as pb

COSTS = {"free": 0.005, "pro": 0.02}


def row(**overrides: object) -> dict[str, object]:
    values: dict[str, object] = {
        "plan_id": "free",
        "plan_limits": {"allowedTiers": ["SLM_A", "SLM_B"]},
        "tenant_slm": False,
        "platform_slm": False,
        "flags": {},
    }
    values.update(overrides)
    return values


def test_plan_limits_flags_and_switches() -> None:
    free = policy_from_row(row(), COSTS, 0.01)
    assert free.allowed_tiers == (pb.SLM_A, pb.SLM_B)
    assert free.error_cost_usd == 0.005
    assert (free.prefer_slm, free.explore, free.source) == (False, True, "database")
    every = policy_from_row(row(plan_id="gold", plan_limits='{"allowedTiers": []}'), COSTS, 0.01)
    assert every.allowed_tiers == (pb.SLM_A, pb.SLM_B, pb.LLM)
    assert every.error_cost_usd == 0.01
    priced = policy_from_row(row(plan_limits={"routerErrorCostUsd": 0.5}), COSTS, 0.01)
    assert priced.error_cost_usd == 0.5
    flagged = policy_from_row(
        row(flags={"router_exploration": False, "router_quality_first": True}), COSTS, 0.01
    )
    assert not flagged.explore
    assert flagged.error_cost_usd == pytest.approx(0.02)
    assert policy_from_row(row(platform_slm=True), COSTS, 0.01).prefer_slm
    assert policy_from_row(row(tenant_slm=True), COSTS, 0.01).prefer_slm


async def test_the_router_keeps_deciding_when_its_stores_are_unreachable() -> None:
    # Closed local ports: connections are refused at once.
    engine = db.create_engine(f"postgresql://nobody@127.0.0.1:{free_port()}/none")
    redis = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", decode_responses=True)
    prometheus = CollectorRegistry()
    metrics = RouterMetrics(prometheus)
    tenants = TenantPolicies(engine, ttl_s=10, error_costs=COSTS, default_cost=0.02)
    registry = PolicyRegistry(None, str(SHIPPED_MODEL), metrics)
    await registry.refresh()
    router = Router(registry, tenants, RouterStore(redis), metrics, EngineConfig())
    try:
        policy = await tenants.get("acme")
        assert policy.source == "unavailable"
        assert policy.allowed_tiers == (pb.SLM_A, pb.SLM_B, pb.LLM)
        decision = await router.decide("acme", "Where is my order #12345?", {}, pb.BALANCED)
        assert decision.source == "bandit"
        await router.flush_decisions()
        for operation in ("tenant_state", "save_decision"):
            value = prometheus.get_sample_value(
                "router_state_errors_total", {"operation": operation}
            )
            assert value is not None
            assert value >= 1
    finally:
        await router.aclose()
        await tenants.aclose()
        await redis.aclose()
        await engine.dispose()
