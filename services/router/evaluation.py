"""Offline evaluation of routing strategies on labelled samples, with early exit.

Each strategy names the first tier per sample. The answer of a tier is acceptable when the
sample's label says so. Early exit as served: a failure on a strict-schema query is caught
by the schema validators and escalates to the next tier (its cost is added); any other
failure stands. Quality is the share of acceptable final answers; a misroute is a first
tier that was not acceptable; an over-route is a first tier above the cheapest acceptable.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from services.router import bandit, features, policy
from services.router.dataset import Sample
from services.router.model import TierModel
from supportmesh.spec.v1 import tier_pb2 as pb

TIERS = bandit.TIERS


@dataclass(frozen=True)
class Result:
    """Figures of one strategy."""

    name: str
    cost_per_query: float
    quality: float
    misroute_rate: float
    overroute_rate: float
    mix: dict[str, float]


def simulate(
    name: str, first: Sequence[int], samples: Sequence[Sample], feats: Sequence[features.Features]
) -> Result:
    """Play a strategy's first tiers through early exit and total cost and quality."""
    cost = good = misroutes = overroutes = 0.0
    for tier, sample, feature in zip(first, samples, feats, strict=True):
        labels = sample.labels
        strict = feature.text.json_schema_strictness > 0
        cheapest = next((t for t in TIERS if labels.get(t)), None)
        misroutes += not labels.get(tier, False)
        overroutes += cheapest is not None and tier > cheapest
        current = tier
        while True:
            cost += policy.estimate(current, feature.text.token_count)[0]
            if labels.get(current, False):
                good += 1
                break
            if not strict or current == pb.LLM:
                break
            current += 1
    n = len(first)
    mix = Counter(pb.Tier.Name(t) for t in first)  # type: ignore[arg-type]
    return Result(
        name,
        cost / n,
        good / n,
        misroutes / n,
        overroutes / n,
        {tier: mix[tier] / n for tier in ("SLM_A", "SLM_B", "LLM")},
    )


def predictions(model: TierModel, x: np.ndarray) -> list[tuple[float, float, float]]:
    """The model's calibrated P(success) per tier for every row of ``x``."""
    return [model.predict(row) for row in x]


def route(
    probs: Sequence[tuple[float, float, float]],
    feats: Sequence[features.Features],
    error_cost_usd: float,
) -> list[int]:
    """The router's greedy first tiers (no tenant history, no exploration)."""
    constraints = bandit.Constraints(allowed=TIERS, error_cost_usd=error_cost_usd, explore=False)
    rng = random.Random(0)  # noqa: S311 - exploration is off; any seed will do
    chosen = []
    for p, feature in zip(probs, feats, strict=True):
        costs = [policy.estimate(t, feature.text.token_count)[0] for t in TIERS]
        chosen.append(bandit.choose(p, costs, {}, constraints, pb.BALANCED, rng).tier)
    return chosen


def baselines(
    samples: Sequence[Sample], feats: Sequence[features.Features], seed: int = 7
) -> list[Result]:
    """Always-LLM, always-SLM_A, uniform random and the rule policy."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible random baseline
    rules = [policy.decide(policy.extract(s.query, s.context), pb.BALANCED).tier for s in samples]
    return [
        simulate("always-LLM", [pb.LLM] * len(samples), samples, feats),
        simulate("always-SLM_A", [pb.SLM_A] * len(samples), samples, feats),
        simulate("random", [rng.choice(TIERS) for _ in samples], samples, feats),
        simulate("rules-v1", rules, samples, feats),
    ]


def calibration_metrics(probs: Sequence[float], labels: Sequence[bool]) -> dict[str, float]:
    """Brier score, expected calibration error (10 bins) and ROC AUC of one tier."""
    p = np.asarray(probs)
    y = np.asarray(labels, dtype=float)
    brier = float(np.mean((p - y) ** 2))
    bins = np.minimum((p * 10).astype(int), 9)
    ece = sum(
        abs(float(p[bins == b].mean()) - float(y[bins == b].mean())) * float(np.mean(bins == b))
        for b in range(10)
        if np.any(bins == b)
    )
    positives, negatives = p[y == 1], p[y == 0]
    auc = math.nan
    if len(positives) and len(negatives):
        wins = (positives[:, None] > negatives[None, :]).sum()
        ties = (positives[:, None] == negatives[None, :]).sum()
        auc = float((wins + 0.5 * ties) / (len(positives) * len(negatives)))
    return {"brier": brier, "ece": float(ece), "auc": auc}
