"""The deterministic factuality check behind the factuality gate."""

from __future__ import annotations

import pytest

from services.orchestrator.workflow import check_factuality
from services.orchestrator.workflow.factuality import flatten

ORDER = flatten(
    {
        "order_id": "A-1234",
        "status": "SHIPPED",
        "carrier": "DHL",
        "eta": "2026-12-01",
        "total_cents": 4250,
    },
    "lookup",
)
POLICY = "Returns are accepted within 30 days of delivery with the original receipt."


@pytest.mark.parametrize(
    "answer",
    [
        "Your order A-1234 has shipped with DHL. It should arrive on 2026-12-01.",
        "Thanks for asking! Order A-1234 was shipped by DHL.",
        "Your order will arrive on December 1, 2026, it shipped with DHL.",
        "We accept returns within 30 days of delivery if you have the original receipt.",
    ],
)
def test_supported_answers_pass(answer: str) -> None:
    report = check_factuality(answer, [ORDER, POLICY], ["Where is order A-1234?"])
    assert report.passed, report.explain()


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ("Your order A-1234 was delivered yesterday.", "unsupported sentence"),
        (
            "Your order A-1234 has shipped. It arrives on 2026-11-02.",
            "unsupported facts 2026-11-02",
        ),
        ("Order A-9999 has shipped with DHL.", "unsupported facts a-9999"),
        ("Returns are accepted within 90 days.", "unsupported facts 90"),
        ("", "sentences supported"),
    ],
)
def test_unsupported_answers_fail(answer: str, why: str) -> None:
    report = check_factuality(answer, [ORDER, POLICY], ["Where is order A-1234?"])
    assert not report.passed
    assert why in report.explain()


def test_a_sentence_cannot_be_stitched_from_two_sources() -> None:
    # Every word is somewhere in the evidence, but no one item supports the claim.
    evidence = ["the parcel carrier is DHL", "returns are refunded in full"]
    stitched = "DHL refunded the parcel in full within the week."
    assert not check_factuality(stitched, evidence).passed
    assert check_factuality(stitched, [" ".join(evidence)]).passed


def test_the_share_of_supported_sentences_is_configurable() -> None:
    answer = "Your order shipped with DHL. We also love cats."
    assert not check_factuality(answer, [ORDER]).passed
    assert check_factuality(answer, [ORDER], min_supported=0.5).passed


def test_known_context_is_not_evidence_for_anything_new() -> None:
    known = ["Tell the customer that order A-1234 is placed."]
    assert check_factuality("Order A-1234 is placed.", [], known).passed
    assert not check_factuality(
        "Order A-1234 is placed and arrives tomorrow.", [ORDER], known
    ).passed
