"""The deterministic rule policy: features of a query → a tier, with its reasons and costs.

It needs no model and cannot fail, so it is also the fallback when a learned policy is
missing or errors. Tiers are tried cheapest-first; anything the chosen tier fails on
escalates along ``escalation_path``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.router.features import DOMAIN_PATTERNS
from supportmesh.spec.v1 import tier_pb2 as pb

POLICY_VERSION = "rules-v1"
MAX_QUERY_CHARS = 16_000

TIERS = (pb.SLM_A, pb.SLM_B, pb.LLM)


@dataclass(frozen=True)
class TierProfile:
    """Price and speed prior of one tier."""

    usd_per_1k_tokens: float
    latency_ms: int
    output_tokens: int


PROFILES: Mapping[int, TierProfile] = {
    pb.SLM_A: TierProfile(usd_per_1k_tokens=0.0002, latency_ms=150, output_tokens=150),
    pb.SLM_B: TierProfile(usd_per_1k_tokens=0.001, latency_ms=400, output_tokens=250),
    pb.LLM: TierProfile(usd_per_1k_tokens=0.01, latency_ms=1200, output_tokens=400),
}


@dataclass(frozen=True)
class Features:
    """What the policy looks at."""

    token_count: int
    json_schema_strictness: float
    domains: frozenset[str]


@dataclass(frozen=True)
class Decision:
    """The policy's answer for one request."""

    tier: int
    confidence: float
    reasoning: str
    cost_estimate: float
    latency_estimate: int
    escalation_path: tuple[int, ...]


def estimate(tier: int, prompt_tokens: int) -> tuple[float, int]:
    """Expected cost in USD and latency in ms of answering with ``tier``."""
    profile = PROFILES[tier]
    tokens = prompt_tokens + profile.output_tokens
    return round(tokens * profile.usd_per_1k_tokens / 1000, 8), profile.latency_ms


def extract(query: str, context: Mapping[str, object]) -> Features:
    """Compute the features of a query and its context."""
    strict = 1.0 if any(key in context for key in ("json_schema", "response_schema")) else 0.0
    domains = frozenset(name for name, pattern in DOMAIN_PATTERNS.items() if pattern.search(query))
    # ~4 characters per token is the usual estimate for English text.
    return Features(max(1, len(query) // 4), strict, domains)


def _difficulty(features: Features) -> float:
    score = min(features.token_count / 400, 1.0) * 0.4
    if "complaint" in features.domains:
        score += 0.45
    if len(features.domains - {"faq"}) > 1:
        score += 0.25
    if "payment" in features.domains:
        score += 0.15
    return min(score, 1.0)


_PREFERENCE_SHIFT: Mapping[int, float] = {pb.FAST: -0.2, pb.BALANCED: 0.0, pb.ACCURATE: 1.0}


def decide(features: Features, preference: int) -> Decision:
    """Choose the cheapest tier whose difficulty band covers the query."""
    difficulty = _difficulty(features)
    shifted = difficulty + _PREFERENCE_SHIFT.get(preference, 0.0)
    index = 0 if shifted < 0.3 else 1 if shifted < 0.6 else 2
    tier = TIERS[index]
    band_low, band_high = (0.0, 0.3, 0.6)[index], (0.3, 0.6, 10.0)[index]
    margin = min(shifted - band_low, band_high - shifted) if index < 2 else shifted - band_low
    confidence = round(min(0.99, 0.6 + max(margin, 0.0)), 3)
    cost, latency = estimate(tier, features.token_count)
    reasons = [f"difficulty {difficulty:.2f}"]
    if features.domains:
        reasons.append("domains " + ",".join(sorted(features.domains)))
    if features.json_schema_strictness:
        reasons.append("strict JSON schema: validated before accepting, escalates on failure")
    if preference in _PREFERENCE_SHIFT and preference != pb.BALANCED:
        name = pb.TierPreference.Name(preference)  # type: ignore[arg-type]
        reasons.append(f"preference {name.lower()}")
    reasons.append(f"{features.token_count} prompt tokens")
    return Decision(
        tier=tier,
        confidence=confidence,
        reasoning="; ".join(reasons),
        cost_estimate=cost,
        latency_estimate=latency,
        escalation_path=TIERS[index + 1 :],
    )
