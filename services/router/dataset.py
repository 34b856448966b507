"""Training data: labelled queries (data/router/dev.jsonl) and outcomes recorded from runs.

Outcomes JSONL, one object per line (what the platform records for real runs)::

    {"query": "Where is my order #123?", "tier": "SLM_A", "success": true,
     "cost": 0.00008, "latency_ms": 180,
     "tenant_id": "acme", "context": {"channel": "chat"}, "tier_preference": "BALANCED"}

``query``, ``tier`` and ``success`` are required; ``cost`` (USD) and ``latency_ms`` are
kept for evaluation; ``tenant_id`` (default "outcomes"), ``context`` and ``tier_preference``
are optional. A labelled row teaches every tier at once; an outcome teaches only its tier.

Features that need history are replayed in file order, exactly as the router computes
them online: novelty against the tenant's recent queries, and the historical failure rate
of SLM_A for the tenant's intent (labelled rows reveal SLM_A's result; outcomes only when
SLM_A is the tier they report).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from services.router import features
from supportmesh.spec.v1 import tier_pb2 as pb

Array = features.Vector


@dataclass(frozen=True)
class Sample:
    """One query with what is known about each tier's success on it."""

    key: str
    tenant: str
    query: str
    context: Mapping[str, Any]
    labels: Mapping[int, bool]  # tier → acceptable; only the known tiers
    preference: int = pb.BALANCED
    cost: float | None = None
    latency_ms: int | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)


def load_labelled(path: Path) -> list[Sample]:
    """Rows of the labelled set: every tier's acceptability is known."""
    samples = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        acceptable = {pb.Tier.Value(name) for name in row["acceptable_tiers"]}
        samples.append(
            Sample(
                key=row["id"],
                tenant=row.get("tenant", "dev"),
                query=row["query"],
                context=row.get("context", {}),
                labels={tier: tier in acceptable for tier in (pb.SLM_A, pb.SLM_B, pb.LLM)},
                attributes=row.get("attributes", {}),
            )
        )
    return samples


def load_outcomes(path: Path) -> list[Sample]:
    """Outcomes recorded from runs (format in the module docstring)."""
    samples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        try:
            tier = pb.Tier.Value(str(row["tier"]).upper())
            query, success = str(row["query"]), bool(row["success"])
        except (KeyError, ValueError) as error:
            raise ValueError(f"{path}:{number}: not an outcome row ({error})") from error
        preference = pb.TierPreference.Value(str(row.get("tier_preference", "BALANCED")).upper())
        samples.append(
            Sample(
                key=f"{path.name}:{number}",
                tenant=row.get("tenant_id", "outcomes"),
                query=query,
                context=row.get("context", {}),
                labels={tier: success},
                preference=preference,
                cost=row.get("cost"),
                latency_ms=row.get("latency_ms"),
            )
        )
    return samples


def held_out(key: str, fraction: float = 0.25) -> bool:
    """Deterministic split: whether a sample belongs to the held-out set."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


def replay(samples: Iterable[Sample]) -> tuple[Array, list[features.Features]]:
    """The model input matrix and the features of each sample, history replayed in order."""
    novelty = features.NoveltyIndex()
    history: dict[tuple[str, str], tuple[int, int]] = {}
    rows, feats = [], []
    for sample in samples:
        text = features.analyze(sample.query, sample.context)
        trials, failures = history.get((sample.tenant, text.intent), (0, 0))
        feature = features.Features(
            text=text,
            novelty_score=novelty.score_and_add(sample.tenant, text.bow),
            historical_failure_rate=features.failure_rate(failures, trials),
            tier_preference=sample.preference,
        )
        if pb.SLM_A in sample.labels:
            failed = 0 if sample.labels[pb.SLM_A] else 1
            history[(sample.tenant, text.intent)] = (trials + 1, failures + failed)
        rows.append(features.model_input(feature))
        feats.append(feature)
    return np.vstack(rows), feats
