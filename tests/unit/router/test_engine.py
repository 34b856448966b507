"""The decision path without Valkey or PostgreSQL: model, fallbacks, plan constraints."""

from collections.abc import Callable

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from services.kit import errors
from services.router import features, model, policy
from services.router.app import SHIPPED_MODEL
from services.router.engine import EngineConfig, Report, Router
from services.router.metrics import RouterMetrics
from services.router.registry import PolicyRegistry
from services.router.tenants import TenantPolicies, TenantPolicy
from supportmesh.spec.v1 import tier_pb2 as pb

HARD = (
    "This is unacceptable! I was charged twice for #12345, one charge was partly refunded and "
    "my bank shows a pending reversal; work out how much I'm still owed."
)


class FixedPolicies(TenantPolicies):
    def __init__(self, policy: TenantPolicy) -> None:
        super().__init__(None, ttl_s=1, error_costs={}, default_cost=0.02)
        self.policy = policy

    async def get(self, tenant: str) -> TenantPolicy:
        return self.policy


def make_router(
    loader: Callable[[str], model.TierModel] = model.load,
    policy_: TenantPolicy | None = None,
) -> Router:
    metrics = RouterMetrics(CollectorRegistry())
    registry = PolicyRegistry(None, str(SHIPPED_MODEL), metrics, loader=loader)
    tenants = FixedPolicies(
        policy_ or TenantPolicy((pb.SLM_A, pb.SLM_B, pb.LLM), 0.02, False, False, "pro", "test")
    )
    return Router(registry, tenants, None, metrics, EngineConfig())


async def test_the_shipped_model_decides_and_explains() -> None:
    router = make_router()
    await router.registry.refresh()
    easy = await router.decide("acme", "Where is my order #12345?", {}, pb.BALANCED)
    hard = await router.decide("acme", HARD, {}, pb.BALANCED)
    assert easy.source == hard.source == "bandit"
    assert easy.policy_version == hard.policy_version != policy.POLICY_VERSION
    assert easy.tier < hard.tier == pb.LLM
    assert easy.escalation_path == tuple(t for t in (pb.SLM_B, pb.LLM) if t > easy.tier)
    assert "lowest expected cost" in hard.reasoning
    assert "held back by" in hard.reasoning
    assert 0.0 <= hard.confidence <= 1.0
    assert hard.cost_estimate > easy.cost_estimate


async def test_no_model_falls_back_to_rules_with_the_reason() -> None:
    def broken(uri: str) -> model.TierModel:
        raise model.ModelError("cannot read artifact: disk on fire")

    router = make_router(loader=broken)
    await router.registry.refresh()
    decision = await router.decide("acme", "What are your opening hours?", {}, pb.BALANCED)
    assert decision.source == "rules"
    assert decision.policy_version == policy.POLICY_VERSION
    assert "disk on fire" in decision.reasoning
    assert decision.tier == pb.SLM_A


async def test_a_model_that_raises_falls_back_to_rules() -> None:
    good = model.load(str(SHIPPED_MODEL))
    wrong_shape = model.TierModel(**{**vars(good), "weights": np.zeros((3, 5))})
    router = make_router(loader=lambda uri: wrong_shape)
    await router.registry.refresh()
    decision = await router.decide("acme", HARD, {}, pb.BALANCED)
    assert decision.source == "rules"
    assert "failed" in decision.reasoning
    assert decision.tier == pb.LLM


async def test_rules_fallback_respects_plan_and_degrade_switch() -> None:
    def broken(uri: str) -> model.TierModel:
        raise model.ModelError("no model")

    free = TenantPolicy((pb.SLM_A, pb.SLM_B), 0.005, False, True, "free", "test")
    router = make_router(loader=broken, policy_=free)
    await router.registry.refresh()
    capped = await router.decide("acme", HARD, {}, pb.ACCURATE)
    assert capped.tier == pb.SLM_B
    assert capped.escalation_path == ()
    degraded = TenantPolicy((pb.SLM_A, pb.SLM_B, pb.LLM), 0.02, True, True, "pro", "test")
    router = make_router(loader=broken, policy_=degraded)
    await router.registry.refresh()
    decision = await router.decide("acme", HARD, {}, pb.BALANCED)
    assert decision.tier == pb.SLM_A
    assert decision.escalation_path == (pb.SLM_B, pb.LLM)


async def test_learned_policy_honours_plan_and_degrade_switch() -> None:
    free = TenantPolicy((pb.SLM_A, pb.SLM_B), 0.005, False, True, "free", "test")
    router = make_router(policy_=free)
    await router.registry.refresh()
    for preference in (pb.FAST, pb.BALANCED, pb.ACCURATE):
        decision = await router.decide("acme", HARD, {}, preference)
        assert decision.tier in (pb.SLM_A, pb.SLM_B)
        assert pb.LLM not in decision.escalation_path
    degraded = TenantPolicy((pb.SLM_A, pb.SLM_B, pb.LLM), 0.02, True, True, "pro", "test")
    router = make_router(policy_=degraded)
    await router.registry.refresh()
    decision = await router.decide("acme", HARD, {}, pb.BALANCED)
    assert decision.tier == pb.SLM_B
    assert decision.source == "degrade"
    assert decision.escalation_path == (pb.LLM,)
    assert "prefer_slm_tiers" in decision.reasoning


async def test_learning_needs_valkey() -> None:
    router = make_router()
    report = Report("k", "d", "acme", pb.SLM_A, True, True)
    with pytest.raises(errors.Unavailable):
        await router.learn(report)


def test_model_input_width_matches_the_shipped_artifact() -> None:
    shipped = model.load(str(SHIPPED_MODEL))
    assert shipped.weights.shape == (3, len(features.FEATURE_NAMES))
