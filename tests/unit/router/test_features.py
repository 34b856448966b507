import numpy as np
import pytest

from services.router import features
from supportmesh.spec.v1 import tier_pb2 as pb

FLAT = {"type": "object", "properties": {"status": {"type": "string"}}}
NESTED = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "status": {"type": "string"},
        "items": {
            "type": "array",
            "items": {"type": "object", "properties": {"sku": {}, "qty": {}}},
        },
    },
}


def test_token_count_is_about_four_characters_per_token() -> None:
    assert features.analyze("x" * 400, {}).token_count == 100
    assert features.analyze("hi", {}).token_count == 1


@pytest.mark.parametrize(
    ("context", "low", "high"),
    [({}, 0.0, 0.0), ({"json_schema": FLAT}, 0.5, 0.6), ({"json_schema": NESTED}, 0.9, 1.0)],
)
def test_schema_strictness_grows_with_strictness_and_size(
    context: dict[str, object], low: float, high: float
) -> None:
    strictness = features.analyze("status?", context).json_schema_strictness
    assert low <= strictness <= high


def test_domain_flags_and_intent() -> None:
    text = features.analyze("Where is my order #12345? I want a refund", {})
    assert {"order", "tracking", "payment"} <= text.domains
    assert text.intent == "tracking"
    assert "identifier" in text.cues
    assert features.analyze("Good day to you", {}).intent == "general"
    assert "complaint" in features.analyze("This is unacceptable", {}).domains


def test_hashed_bag_of_words_is_stable_and_normalised() -> None:
    one = features.hashed_bow("Track parcel 1Z12345678 please")
    two = features.hashed_bow("track parcel 1Z99999999 please")
    assert one.shape == (features.HASH_DIM,)
    assert np.isclose(np.linalg.norm(one), 1.0)
    # Digits fold to 0 and case is ignored: the same question with another id is the same.
    assert np.allclose(one, two)
    assert not features.hashed_bow("").any()


def test_novelty_is_high_for_new_queries_and_low_for_repeats() -> None:
    index = features.NoveltyIndex(ring_size=4, max_tenants=2)
    first = features.hashed_bow("where is my parcel")
    assert index.score_and_add("t1", first) == 1.0
    assert index.score_and_add("t1", first) < 0.01
    assert index.score_and_add("t1", features.hashed_bow("cancel my subscription")) > 0.5
    # Tenants do not share history.
    assert index.score_and_add("t2", first) == 1.0


def test_novelty_ring_and_tenant_lru_are_bounded() -> None:
    index = features.NoveltyIndex(ring_size=2, max_tenants=2)
    repeat = features.hashed_bow("where is my parcel")
    index.score_and_add("t1", repeat)
    index.score_and_add("t1", features.hashed_bow("cancel my order"))
    index.score_and_add("t1", features.hashed_bow("opening hours"))
    # The ring of two forgot the first query.
    assert index.score_and_add("t1", repeat) > 0.5
    index.score_and_add("t2", repeat)
    index.score_and_add("t3", repeat)  # evicts t1, the least recently used tenant
    assert index.score_and_add("t1", repeat) == 1.0


def test_model_input_follows_feature_names() -> None:
    text = features.analyze("Where is my order?", {"json_schema": FLAT})
    row = features.model_input(features.Features(text, 0.3, 0.2, pb.BALANCED))
    assert row.shape == (len(features.FEATURE_NAMES),)
    named = dict(zip(features.FEATURE_NAMES, row.tolist(), strict=False))
    assert named["novelty_score"] == 0.3
    assert named["historical_failure_rate"] == 0.2
    assert named["domain_order"] == 1.0
    assert named["json_schema_strictness"] == text.json_schema_strictness


def test_failure_rate_is_smoothed() -> None:
    assert features.failure_rate(0, 0) == 0.5
    assert features.failure_rate(0, 98) == pytest.approx(0.01)
