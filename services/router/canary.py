"""Canary traffic split and the statistics that decide an automatic rollback.

A CANARY policy version decides ``canary_percent`` of its canary tenants' requests, chosen by
hashing the decision id (deterministic, so a decision can be re-attributed from its id).
The rest of those tenants' requests form the stable arm. A canary is rolled back when its
success rate is lower than the stable arm's by more than ``margin`` with one-sided
confidence ``confidence`` (a two-proportion z-test against the shifted null
p_canary ≥ p_stable − margin), and only once both arms have ``min_samples`` outcomes. The
verdict's reason gives both arms' raw success rates and sample sizes, the margin and the
test's figures: it is what the rollback's audit entry says.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from statistics import NormalDist

BASIS_POINTS = 10_000


def in_canary(decision_id: str, percent: float) -> bool:
    """Whether a decision falls in the canary's share of traffic."""
    digest = hashlib.sha256(decision_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % BASIS_POINTS < percent * BASIS_POINTS / 100


@dataclass(frozen=True, slots=True)
class ArmCounts:
    """Outcomes of the canary and stable arms for one tenant."""

    canary_trials: int = 0
    canary_successes: int = 0
    stable_trials: int = 0
    stable_successes: int = 0


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether to roll back, and the figures behind it."""

    rollback: bool
    z: float
    p_value: float
    canary_rate: float
    stable_rate: float
    reason: str


def _rate(successes: int, trials: int) -> float:
    # Half-count smoothing keeps the variance positive at 0 % and 100 %.
    return (successes + 0.5) / (trials + 1.0)


def _arm(successes: int, trials: int) -> str:
    return f"{successes}/{trials} succeeded ({successes / trials:.3f})"


def evaluate(
    counts: ArmCounts, *, margin: float, min_samples: int, confidence: float = 0.95
) -> Verdict:
    """Test whether the canary is worse than stable by more than ``margin``."""
    canary = _rate(counts.canary_successes, counts.canary_trials)
    stable = _rate(counts.stable_successes, counts.stable_trials)
    if min(counts.canary_trials, counts.stable_trials) < min_samples:
        reason = f"waiting for {min_samples} outcomes per arm"
        return Verdict(False, 0.0, 1.0, canary, stable, reason)
    se = math.sqrt(
        canary * (1 - canary) / counts.canary_trials + stable * (1 - stable) / counts.stable_trials
    )
    z = ((stable - margin) - canary) / se
    p_value = 1.0 - NormalDist().cdf(z)
    rollback = p_value < 1.0 - confidence
    reason = (
        f"canary {_arm(counts.canary_successes, counts.canary_trials)} vs stable "
        f"{_arm(counts.stable_successes, counts.stable_trials)}; margin {margin:.3f} at "
        f"{confidence:.0%} confidence: z={z:.2f}, p={p_value:.4f}"
    )
    return Verdict(rollback, z, p_value, canary, stable, reason)
