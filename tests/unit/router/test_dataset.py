"""The labelled data set: reproducible, labelled by the documented rule, varied enough."""

import importlib.util
import json
from collections import Counter
from pathlib import Path
from types import ModuleType

from services.router import dataset
from supportmesh.spec.v1 import tier_pb2 as pb

DATA = Path(__file__).resolve().parents[3] / "data" / "router"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("router_generate", DATA / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_file_is_what_the_generator_writes() -> None:
    gen = generator()
    assert gen.dumps(gen.generate()) == (DATA / "dev.jsonl").read_text(encoding="utf-8")


def test_every_row_is_labelled_by_the_rule_from_its_attributes() -> None:
    gen = generator()
    rows = [json.loads(line) for line in (DATA / "dev.jsonl").read_text().splitlines()]
    assert len(rows) >= 1000
    for row in rows:
        assert row["acceptable_tiers"] == gen.acceptable_tiers(row["attributes"])
        # Acceptable sets are upward closed: a stronger tier never does worse.
        tiers = [pb.Tier.Value(t) for t in row["acceptable_tiers"]]
        assert tiers == list(range(min(tiers), 4)) if tiers else True


def test_the_data_covers_intents_and_hard_cases() -> None:
    rows = [json.loads(line) for line in (DATA / "dev.jsonl").read_text().splitlines()]
    assert set(Counter(r["intent"] for r in rows)) == {
        "faq",
        "order",
        "tracking",
        "lead",
        "payment",
    }
    attrs = [r["attributes"] for r in rows]
    assert sum(a["ambiguous"] for a in attrs) > 50
    assert sum(a["multi_intent"] for a in attrs) > 50
    assert sum(a["emotional_tone"] == "angry" for a in attrs) > 50
    assert sum(a["strict_schema"] for a in attrs) > 100
    cheapest = Counter(r["acceptable_tiers"][0] if r["acceptable_tiers"] else "" for r in rows)
    assert min(cheapest["SLM_A"], cheapest["SLM_B"], cheapest["LLM"]) > 200


def test_outcomes_load_with_one_known_tier(tmp_path: Path) -> None:
    path = tmp_path / "outcomes.jsonl"
    path.write_text(
        '{"query": "where is my parcel", "tier": "SLM_A", "success": false, "cost": 0.0001,'
        ' "latency_ms": 150, "tenant_id": "acme"}\n\n'
        '{"query": "refund please", "tier": "llm", "success": true}\n'
    )
    samples = dataset.load_outcomes(path)
    assert [s.labels for s in samples] == [{pb.SLM_A: False}, {pb.LLM: True}]
    assert samples[0].tenant == "acme"
    assert samples[0].latency_ms == 150
    x, feats = dataset.replay(samples)
    assert x.shape[0] == 2
    assert feats[0].historical_failure_rate == 0.5


def test_replay_tracks_slm_a_failures_per_tenant_and_intent() -> None:
    fail: dict[int, bool] = {pb.SLM_A: False, pb.SLM_B: True, pb.LLM: True}
    samples = [dataset.Sample(str(i), "t", "where is my parcel", {}, fail) for i in range(3)]
    _, feats = dataset.replay(samples)
    assert [round(f.historical_failure_rate, 2) for f in feats] == [0.5, 0.67, 0.75]
    assert feats[0].novelty_score == 1.0
    assert feats[1].novelty_score < 0.01


def test_the_split_is_deterministic() -> None:
    keys = [f"q-{i:05d}" for i in range(4000)]
    held = [dataset.held_out(k) for k in keys]
    assert held == [dataset.held_out(k) for k in keys]
    assert 0.22 < sum(held) / len(held) < 0.28
