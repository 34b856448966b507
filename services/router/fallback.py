"""A decision, and how the rule policy makes one under the tenant's constraints.

The rule policy is the fallback of the learned one: it decides when no model is loaded or
the model raises. It still honours the plan's allowed tiers and the degrade switch, and
its reasoning starts with why the learned policy did not decide.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.router import bandit, policy
from services.router.explain import tier_name
from services.router.tenants import TenantPolicy
from supportmesh.spec.v1 import tier_pb2 as pb


@dataclass(frozen=True)
class Decision:
    """The router's answer for one request (the DecideResponse fields)."""

    tier: int
    confidence: float
    reasoning: str
    cost_estimate: float
    latency_estimate: int
    escalation_path: tuple[int, ...]
    decision_id: str
    policy_version: str
    source: str  # "bandit", "preference", "degrade" or "rules"


def rules(
    decision_id: str,
    query: str,
    context: Mapping[str, Any],
    preference: int,
    plan: TenantPolicy,
    problem: str,
) -> Decision:
    """The rule policy's decision, moved into the tiers the tenant may use."""
    features = policy.extract(query, context)
    rule = policy.decide(features, preference)
    allowed = sorted(plan.allowed_tiers)
    tier = rule.tier
    if plan.prefer_slm:
        slms = [t for t in allowed if t != pb.LLM] or allowed
        tier = max(slms) if preference == pb.ACCURATE else min(slms)
    if tier not in allowed:
        tier = max((t for t in allowed if t <= tier), default=allowed[0])
    cost, latency = policy.estimate(tier, features.token_count)
    reasoning = f"rule policy decided ({problem or 'no learned model'}): {rule.reasoning}"
    if tier != rule.tier:
        reasoning += (
            f"; {tier_name(tier)} instead of {tier_name(rule.tier)} (plan or degrade switch)"
        )
    return Decision(
        tier=tier,
        confidence=rule.confidence,
        reasoning=reasoning,
        cost_estimate=cost,
        latency_estimate=latency,
        escalation_path=bandit.escalation_path(tier, allowed),
        decision_id=decision_id,
        policy_version=policy.POLICY_VERSION,
        source="rules",
    )
