from services.router import policy
from supportmesh.spec.v1 import tier_pb2 as pb


def decide(query: str, preference: int = pb.BALANCED, **context: object) -> policy.Decision:
    return policy.decide(policy.extract(query, context), preference)


def test_simple_faq_goes_to_the_cheapest_tier_with_full_escalation_path() -> None:
    decision = decide("What are your opening hours?")
    assert decision.tier == pb.SLM_A
    assert decision.escalation_path == (pb.SLM_B, pb.LLM)
    assert "faq" in decision.reasoning


def test_angry_complaint_about_a_payment_goes_to_the_llm() -> None:
    decision = decide("This is unacceptable, you charged my card twice and refund nothing")
    assert decision.tier == pb.LLM
    assert decision.escalation_path == ()


def test_preferences_shift_the_choice() -> None:
    query = "Where is my order 1234? It was supposed to ship last week and track shows nothing"
    balanced = decide(query)
    assert decide(query, pb.ACCURATE).tier == pb.LLM
    assert decide(query, pb.FAST).tier <= balanced.tier


def test_strict_schema_is_reported() -> None:
    decision = decide("Give me my order status", json_schema={"type": "object"})
    assert "strict JSON schema" in decision.reasoning


def test_estimates_grow_with_tier() -> None:
    cheap = decide("hours?")
    costly = decide("hours?", pb.ACCURATE)
    assert cheap.cost_estimate < costly.cost_estimate
    assert cheap.latency_estimate < costly.latency_estimate
    assert 0.0 < cheap.confidence <= 0.99
