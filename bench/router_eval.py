"""Routing quality and cost of the learned router against fixed strategies, on held-out data.

Trains the calibrated classifier on the training split of data/router/dev.jsonl (exactly as
``python -m services.router.train`` does), then plays every strategy through early exit on
the held-out split: the router at λ = $0.02 per wrong answer (the Pro plan's price), always
LLM, always SLM_A, uniform random, and the rule policy. It prints cost per query, quality
(share of acceptable final answers), quality retained and cost relative to always-LLM, and
misroutes; sweeps λ for a cost–quality curve saved to bench/out/router_cost_quality.png.

Figures and ratios, not a verdict: the exit code is 0 whether or not the goal is met. Run
it as ``.venv/bin/python bench/router_eval.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: render straight to PNG
import matplotlib.pyplot as plt

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._stats import Cell, print_table
from services.router import dataset, evaluation, model
from services.router.train import train

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "router" / "dev.jsonl"
OUT = ROOT / "bench" / "out" / "router_cost_quality.png"
LAMBDAS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.3, 1.0)
GOAL_QUALITY, GOAL_COST = 0.95, 0.40


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--calibration", choices=model.METHODS, default="sigmoid")
    parser.add_argument("--error-cost-usd", type=float, default=0.02, help="λ of the main row")
    parser.add_argument("--out", type=Path, default=OUT)
    return parser.parse_args(argv)


def row(result: evaluation.Result, llm: evaluation.Result) -> list[Cell]:
    return [
        result.name,
        result.cost_per_query * 1000,
        result.cost_per_query / llm.cost_per_query,
        result.quality,
        result.quality / llm.quality,
        result.misroute_rate,
        result.overroute_rate,
        " ".join(f"{share:.0%}" for share in result.mix.values()),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    samples = dataset.load_labelled(args.data)
    trained = train(samples, method=args.calibration, error_cost_usd=args.error_cost_usd)
    x, feats = dataset.replay(samples)
    held = [i for i, s in enumerate(samples) if dataset.held_out(s.key)]
    held_samples = [samples[i] for i in held]
    held_feats = [feats[i] for i in held]
    probs = evaluation.predictions(trained.model, x[held])
    print(f"router evaluation: {len(samples)} labelled queries, {len(held)} held out")
    print(
        f"model   : {trained.model.version} ({args.calibration} calibration), trained in "
        f"{time.perf_counter() - started:.1f} s"
    )
    for tier in ("slm_a", "slm_b", "llm"):
        m = trained.metrics
        print(
            f"  {tier:5s}  AUC {m[f'{tier}_auc']:.3f}  Brier {m[f'{tier}_brier']:.4f}  "
            f"ECE {m[f'{tier}_ece']:.4f}"
        )
    routed = evaluation.route(probs, held_feats, args.error_cost_usd)
    ours = evaluation.simulate(f"router λ=${args.error_cost_usd}", routed, held_samples, held_feats)
    others = evaluation.baselines(held_samples, held_feats)
    llm = others[0]
    print()
    headers = ["strategy", "m$/query", "cost/LLM", "quality", "qual/LLM", "misroute",
               "overroute", "mix A B LLM"]  # fmt: skip
    print_table(headers, [row(r, llm) for r in (ours, *others)])
    curve = []
    for lam in LAMBDAS:
        result = evaluation.simulate(
            f"λ={lam}", evaluation.route(probs, held_feats, lam), held_samples, held_feats
        )
        curve.append((lam, result))
    print()
    print("cost–quality curve (λ = price of a wrong answer in USD)")
    print_table(
        ["λ", "cost/LLM", "qual/LLM", "misroute"],
        [
            [
                f"{lam:g}",
                r.cost_per_query / llm.cost_per_query,
                r.quality / llm.quality,
                r.misroute_rate,
            ]
            for lam, r in curve
        ],
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(7, 4.5))
    axes.plot(
        [r.cost_per_query / llm.cost_per_query for _, r in curve],
        [r.quality / llm.quality for _, r in curve],
        "o-",
        label="learned router (λ sweep)",
    )
    for result, marker in zip(others, ("s", "v", "x", "D"), strict=True):
        axes.plot(
            result.cost_per_query / llm.cost_per_query,
            result.quality / llm.quality,
            marker,
            markersize=9,
            label=result.name,
        )
    axes.axhline(GOAL_QUALITY, color="grey", linestyle=":", linewidth=1)
    axes.axvline(GOAL_COST, color="grey", linestyle=":", linewidth=1)
    axes.set_xlabel("cost per query relative to always-LLM")
    axes.set_ylabel("quality relative to always-LLM")
    axes.set_title("Router cost–quality trade-off (held-out split, early exit)")
    axes.legend(loc="lower right", fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(args.out, dpi=120)
    print(f"\ncurve   : {args.out}")
    quality, cost = ours.quality / llm.quality, ours.cost_per_query / llm.cost_per_query
    print("\nRatios and goals")
    print(
        f"  quality retained vs always-LLM  {quality:.1%}  (goal ≥ {GOAL_QUALITY:.0%}: "
        f"{'met' if quality >= GOAL_QUALITY else 'NOT met'})"
    )
    print(
        f"  cost vs always-LLM              {cost:.1%}  (goal ≤ {GOAL_COST:.0%}: "
        f"{'met' if cost <= GOAL_COST else 'NOT met'})"
    )
    print(
        f"  cost vs always-SLM_A            {ours.cost_per_query / others[1].cost_per_query:.1f}×"
        f" for {ours.quality / others[1].quality:.2f}× its quality"
    )
    random_ = others[2]
    print(
        f"  vs random routing               {ours.cost_per_query / random_.cost_per_query:.2f}×"
        f" the cost for {ours.quality / random_.quality:.2f}× the quality"
    )
    print(
        "\nCaveat: the labelled set is synthetic (templates × slots × paraphrases × noise); "
        "the held-out split shares templates with training, so these figures are an upper "
        "bound for real traffic. Retrain with --outcomes from real runs before trusting them."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
