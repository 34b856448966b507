"""Train, evaluate and optionally register a router policy version.

``python -m services.router.train --data data/router/dev.jsonl [--outcomes FILE] --out DIR
[--register]`` fits the per-tier calibrated classifiers on the training split, evaluates on
the held-out split (calibration per tier; cost, quality and misroutes of the routing against
always-LLM), writes the artifact and, with ``--register``, records it as a CANARY policy
version through ``ControlService.RegisterPolicyVersion`` (``ROUTER_CONTROL_TARGET``).
The outcomes format is described in :mod:`services.router.dataset`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from services.kit import context
from services.router import dataset, evaluation, model
from services.router.app import RouterSettings
from supportmesh.control.v1 import control_service_pb2 as control_pb
from supportmesh.control.v1 import control_service_pb2_grpc as control_grpc
from supportmesh.control.v1 import resources_pb2
from supportmesh.spec.v1 import tier_pb2 as pb

DEFAULT_ERROR_COST_USD = 0.02
# The control plane accepts a CANARY on 5–10 % of its tenants' traffic; start at the low end.
DEFAULT_CANARY_PERCENT = 5


@dataclass(frozen=True)
class Trained:
    """A fitted model with its held-out evaluation."""

    model: model.TierModel
    fitted: list[Any]
    metrics: dict[str, float]
    report: list[evaluation.Result]


def fit(
    x: np.ndarray, samples: Sequence[dataset.Sample], method: str, seed: int
) -> tuple[list[Any], list[Any]]:
    """Fit each tier on the samples that know its outcome; returns (fitted, parts)."""
    fitted, parts = [], []
    for tier in evaluation.TIERS:
        rows = [i for i, s in enumerate(samples) if tier in s.labels]
        labels = np.asarray([int(samples[i].labels[tier]) for i in rows])
        calibrated, part = model.fit_tier(x[rows], labels, method, seed)
        fitted.append(calibrated)
        parts.append(part)
    return fitted, parts


def train(
    samples: Sequence[dataset.Sample],
    *,
    method: str = "sigmoid",
    seed: int = 0,
    version: str = "",
    error_cost_usd: float = DEFAULT_ERROR_COST_USD,
) -> Trained:
    """Fit on the training split and evaluate on the held-out split."""
    x, feats = dataset.replay(samples)
    test = [dataset.held_out(s.key) for s in samples]
    train_idx = [i for i, t in enumerate(test) if not t]
    test_idx = [i for i, t in enumerate(test) if t]
    train_samples = [samples[i] for i in train_idx]
    fitted, parts = fit(x[train_idx], train_samples, method, seed)
    digest = hashlib.sha256(f"{method}:{seed}:{len(samples)}".encode())
    for sample in samples:
        digest.update(sample.key.encode() + sample.query.encode())
    version = version or f"lr-{method}-{digest.hexdigest()[:10]}"
    meta = {
        "calibration": method,
        "seed": seed,
        "train_rows": len(train_idx),
        "test_rows": len(test_idx),
    }
    tier_model = model.assemble(version, parts, x[train_idx], meta)
    held = [samples[i] for i in test_idx]
    held_feats = [feats[i] for i in test_idx]
    probs = evaluation.predictions(tier_model, x[test_idx])
    metrics: dict[str, float] = {}
    for index, tier in enumerate(evaluation.TIERS):
        known = [
            (p[index], s.labels[tier]) for p, s in zip(probs, held, strict=True) if tier in s.labels
        ]
        if known:
            figures = evaluation.calibration_metrics([p for p, _ in known], [y for _, y in known])
            name = pb.Tier.Name(tier).lower()
            metrics.update({f"{name}_{key}": value for key, value in figures.items()})
    metrics["calibration_error"] = float(
        np.nanmean([metrics[k] for k in metrics if k.endswith("_ece")])
    )
    full = [s for s in held if len(s.labels) == len(evaluation.TIERS)]
    full_idx = [i for i, s in enumerate(held) if len(s.labels) == len(evaluation.TIERS)]
    report: list[evaluation.Result] = []
    if full:
        full_feats = [held_feats[i] for i in full_idx]
        routed = evaluation.route([probs[i] for i in full_idx], full_feats, error_cost_usd)
        ours = evaluation.simulate(version, routed, full, full_feats)
        report = [ours, *evaluation.baselines(full, full_feats)]
        llm = report[1]
        metrics.update(
            misroute_rate=ours.misroute_rate,
            expected_cost_usd=ours.cost_per_query,
            quality=ours.quality,
            quality_retained_vs_llm=ours.quality / llm.quality if llm.quality else 0.0,
            cost_ratio_vs_llm=ours.cost_per_query / llm.cost_per_query,
        )
    tier_model = model.TierModel(**{**vars(tier_model), "metadata": {**meta, "metrics": metrics}})
    return Trained(tier_model, fitted, metrics, report)


async def register(
    target: str, trained: Trained, uri: str, percent: int, tenants: Sequence[str]
) -> resources_pb2.PolicyVersion:
    """Record the artifact as a CANARY policy version through the control plane."""
    version = resources_pb2.PolicyVersion(
        version=trained.model.version,
        artifact_uri=uri,
        metrics=trained.metrics,
        status=resources_pb2.POLICY_VERSION_STATUS_CANARY,
        canary_percent=percent,
        canary_tenants=list(tenants),
    )
    request = control_pb.RegisterPolicyVersionRequest(
        policy_version=version, request_id=f"router-train-{trained.model.version}"
    )
    async with grpc.aio.insecure_channel(target) as channel:
        stub = control_grpc.ControlServiceStub(channel)
        reply = await stub.RegisterPolicyVersion(
            request, timeout=10, metadata=((context.PLATFORM_ADMIN_KEY, "1"),)
        )
    return reply.policy_version


def _print_report(trained: Trained) -> None:
    for key in sorted(trained.metrics):
        print(f"  {key:32s} {trained.metrics[key]:.4f}")
    for result in trained.report:
        mix = " ".join(f"{t}={share:.0%}" for t, share in result.mix.items())
        print(
            f"  {result.name:24s} cost/query ${result.cost_per_query:.6f}  quality "
            f"{result.quality:.3f}  misroute {result.misroute_rate:.3f}  [{mix}]"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, train, write and optionally register."""
    parser = argparse.ArgumentParser(
        prog="python -m services.router.train", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--data", type=Path, required=True, help="labelled JSONL (dev.jsonl)")
    parser.add_argument("--outcomes", type=Path, action="append", default=[], help="outcomes JSONL")
    parser.add_argument("--out", type=Path, required=True, help="artifact directory to write")
    parser.add_argument("--calibration", choices=model.METHODS, default="sigmoid")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--version", default="", help="version id (default: content hash)")
    parser.add_argument("--error-cost-usd", type=float, default=DEFAULT_ERROR_COST_USD)
    parser.add_argument("--register", action="store_true", help="register as a CANARY version")
    parser.add_argument(
        "--canary-percent", type=int, default=DEFAULT_CANARY_PERCENT, help="5–10 (default 5)"
    )
    parser.add_argument("--canary-tenant", action="append", default=[], dest="canary_tenants")
    args = parser.parse_args(argv)
    samples = dataset.load_labelled(args.data)
    for path in args.outcomes:
        samples += dataset.load_outcomes(path)
    trained = train(
        samples,
        method=args.calibration,
        seed=args.seed,
        version=args.version,
        error_cost_usd=args.error_cost_usd,
    )
    model.save(trained.model, trained.fitted, args.out)
    print(f"policy version {trained.model.version} written to {args.out}")
    _print_report(trained)
    if args.register:
        target = RouterSettings().control_target
        if not target:
            print("--register needs ROUTER_CONTROL_TARGET (the control service's host:port)")
            return 2
        uri = args.out.resolve().as_uri()
        recorded = asyncio.run(
            register(target, trained, uri, args.canary_percent, args.canary_tenants)
        )
        print(json.dumps({"registered": recorded.name, "status": "CANARY", "artifact_uri": uri}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
