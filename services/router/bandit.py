"""Per-tenant Thompson sampling over tiers, minimising E[cost + λ·error].

The classifier gives P(success | tier, features) for the request; the bandit corrects it per
tenant. Each tenant × tier keeps a Beta posterior over "how often this tier succeeds for
this tenant", whose prior is centred on the model's own average prediction for that
traffic (strength ``prior_strength`` pseudo-observations). Its shift in log-odds from the
model's average is applied to the request's prediction, so an unobserved tenant starts
exactly at the model and a tenant whose outcomes beat or miss the model moves away from it.

Exploration is Thompson sampling (a posterior draw instead of the mean) behind two bounds:
a draw may overturn the greedy choice on at most ``explore_cap`` of decisions, and only
among the tiers the tenant's plan allows. The ``prefer_slm_tiers`` degrade switch turns
exploration off and takes the cheapest SLM tier the model deems acceptable; ACCURATE
callers get the strongest allowed SLM tier instead. The switch wins over the preference
because it is an operator's overload lever for the whole platform, and the LLM stays
reachable through the escalation path when validators fail. Without the switch, ACCURATE
means the most capable allowed tier and FAST halves λ.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from supportmesh.spec.v1 import tier_pb2 as pb

TIERS = (pb.SLM_A, pb.SLM_B, pb.LLM)
# λ multipliers: FAST halves the price of an error; ACCURATE takes the most capable tier.
PREFERENCE_WEIGHT: Mapping[int, float] = {pb.FAST: 0.5}
# Under the degrade switch, a tier is "acceptable" from this predicted success on.
DEGRADE_MIN_SUCCESS = 0.6
_EPS = 1e-4


@dataclass(frozen=True, slots=True)
class ArmStats:
    """Outcomes of one tier for one tenant."""

    trials: float = 0.0
    successes: float = 0.0
    predicted: float = 0.0  # sum of the model's P(success) at decision time


@dataclass(frozen=True, slots=True)
class Constraints:
    """What the tenant's plan, flags and degrade switches allow."""

    allowed: tuple[int, ...]
    error_cost_usd: float
    prefer_slm: bool = False
    explore: bool = True
    explore_cap: float = 0.05
    prior_strength: float = 20.0


@dataclass(frozen=True, slots=True)
class Choice:
    """The bandit's answer."""

    tier: int
    p_success: float
    explored: bool
    mode: str  # "bandit", "preference" or "degrade"
    adjusted: Mapping[int, float]  # posterior-mean P(success) per allowed tier
    losses: Mapping[int, float]  # expected cost + λ·error per allowed tier, in USD


def _logit(p: float) -> float:
    p = min(1 - _EPS, max(_EPS, p))
    return math.log(p / (1 - p))


def _expit(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def posterior(p: float, stats: ArmStats, strength: float) -> tuple[float, float, float]:
    """(alpha, beta, prior mean) of the tenant × tier Beta posterior for a prediction ``p``."""
    prior = stats.predicted / stats.trials if stats.trials > 0 else p
    prior = min(1 - _EPS, max(_EPS, prior))
    failures = max(stats.trials - stats.successes, 0.0)
    return strength * prior + stats.successes, strength * (1 - prior) + failures, prior


def adjust(p: float, stats: ArmStats, strength: float, rng: random.Random | None = None) -> float:
    """The tenant-corrected P(success): posterior mean, or a posterior draw given ``rng``."""
    alpha, beta, prior = posterior(p, stats, strength)
    rate = rng.betavariate(alpha, beta) if rng is not None else alpha / (alpha + beta)
    return _expit(_logit(p) + _logit(rate) - _logit(prior))


def escalation_path(tier: int, allowed: Sequence[int]) -> tuple[int, ...]:
    """The allowed tiers above ``tier``, cheapest first."""
    return tuple(t for t in sorted(allowed) if t > tier)


def choose(
    p_model: Sequence[float],
    costs: Sequence[float],
    stats: Mapping[int, ArmStats],
    constraints: Constraints,
    preference: int,
    rng: random.Random,
) -> Choice:
    """Pick the first tier to try; ``p_model`` and ``costs`` are indexed SLM_A, SLM_B, LLM."""
    allowed = tuple(sorted(t for t in constraints.allowed if t in TIERS)) or TIERS
    lam = constraints.error_cost_usd * PREFERENCE_WEIGHT.get(preference, 1.0)
    strength = constraints.prior_strength
    means = {t: adjust(p_model[t - 1], stats.get(t, ArmStats()), strength) for t in allowed}
    losses = {t: costs[t - 1] + lam * (1 - means[t]) for t in allowed}
    if constraints.prefer_slm:
        slms = [t for t in allowed if t != pb.LLM] or list(allowed)
        tier = max(slms)
        if preference != pb.ACCURATE:
            tier = next((t for t in slms if means[t] >= DEGRADE_MIN_SUCCESS), tier)
        return Choice(tier, means[tier], False, "degrade", means, losses)
    if preference == pb.ACCURATE:
        # TierPreference.ACCURATE is "prefer the most capable tier": the caller pays for it.
        return Choice(allowed[-1], means[allowed[-1]], False, "preference", means, losses)
    greedy = min(allowed, key=lambda t: (losses[t], t))
    tier, explored = greedy, False
    # At most explore_cap of decisions may explore: only those draw from the posteriors
    # (Thompson sampling), and the draw's choice replaces the greedy one. Drawing only then
    # is the same as always drawing and gating afterwards, without the cost of the draws.
    if constraints.explore and len(allowed) > 1 and rng.random() < constraints.explore_cap:
        draws = {
            t: costs[t - 1]
            + lam * (1 - adjust(p_model[t - 1], stats.get(t, ArmStats()), strength, rng))
            for t in allowed
        }
        sampled = min(allowed, key=lambda t: (draws[t], t))
        tier, explored = sampled, sampled != greedy
    return Choice(tier, means[tier], explored, "bandit", means, losses)
