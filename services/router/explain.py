"""The human-readable ``reasoning`` of a learned decision: what drove the choice."""

from __future__ import annotations

from services.router import bandit
from services.router.features import Features, Vector
from services.router.model import TierModel
from services.router.registry import Selection
from services.router.tenants import TenantPolicy
from supportmesh.spec.v1 import tier_pb2 as pb


def tier_name(tier: int) -> str:
    """The wire name of a tier."""
    return pb.Tier.Name(tier)  # type: ignore[arg-type]


def learned(
    choice: bandit.Choice,
    selection: Selection,
    model: TierModel,
    row: Vector,
    feats: Features,
    plan: TenantPolicy,
    path: tuple[int, ...],
) -> str:
    """Why the bandit chose its tier: losses, probabilities, the features that mattered."""
    name = tier_name(choice.tier)
    cheaper = [t for t in choice.adjusted if t < choice.tier]
    if cheaper:
        # The interesting question is why the next cheaper tier was not good enough.
        held = max(cheaper)
        why = model.drivers(row, held - 1, lowering=True)
        driver = f"{tier_name(held)} held back by {', '.join(why) or 'its base rate'}"
    else:
        why = model.drivers(row, choice.tier - 1, lowering=False)
        driver = f"{name} supported by {', '.join(why) or 'its base rate'}"
    losses = ", ".join(f"{tier_name(t)} ${v:.5f}" for t, v in choice.losses.items())
    probs = ", ".join(f"{tier_name(t)} {v:.2f}" for t, v in choice.adjusted.items())
    headline = {
        "degrade": "degrade switch prefer_slm_tiers on",
        "preference": "preference accurate takes the most capable allowed tier",
    }.get(choice.mode, "lowest expected cost + λ·error")
    reasons = [
        f"{name}: {headline}",
        f"expected loss {losses} (λ ${plan.error_cost_usd:.3f}/error)",
        f"P(success) {probs}",
        driver,
    ]
    return "; ".join(reasons + context(feats, plan, path, choice.explored, selection))


def context(
    feats: Features, plan: TenantPolicy, path: tuple[int, ...], explored: bool, selection: Selection
) -> list[str]:
    """The request's notable features, constraints and the escalation path, as phrases."""
    text = feats.text
    reasons = [f"intent {text.intent}"]
    if text.domains:
        reasons.append("domains " + ",".join(sorted(text.domains)))
    if text.json_schema_strictness:
        reasons.append(
            f"strict JSON schema ({text.json_schema_strictness:.2f}): an answer that validates "
            "stands (early exit)"
        )
    if feats.novelty_score >= 0.8:
        reasons.append(f"novel for this tenant ({feats.novelty_score:.2f})")
    if feats.historical_failure_rate > 0.6:
        reasons.append(f"SLM_A often fails this intent here ({feats.historical_failure_rate:.2f})")
    if feats.tier_preference in (pb.FAST, pb.ACCURATE):
        preference = pb.TierPreference.Name(feats.tier_preference)  # type: ignore[arg-type]
        reasons.append(f"preference {preference.lower()}")
    if len(plan.allowed_tiers) < len(bandit.TIERS):
        reasons.append("plan allows " + ",".join(tier_name(t) for t in plan.allowed_tiers))
    if explored:
        reasons.append("exploring: a Thompson draw chose this tier")
    if selection.arm == "canary":
        reasons.append(f"canary policy {selection.version}")
    reasons.append(f"{text.token_count} prompt tokens")
    if path:
        reasons.append(f"escalates to {' → '.join(tier_name(t) for t in path)} if validators fail")
    else:
        reasons.append("no escalation")
    return reasons
