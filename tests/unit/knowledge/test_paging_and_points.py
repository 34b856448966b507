"""Page tokens, stable point ids, the BM25 terms points carry and passage positions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from services.kit import errors
from services.knowledge import paging
from services.knowledge.lexical import Lexical
from services.knowledge.worker import build_points, passage_terms, point_id


def test_page_tokens_round_trip_and_forgeries_are_refused() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    document = str(uuid.uuid4())
    assert paging.decode(paging.encode(moment, document)) == (moment, document)
    assert paging.decode("") is None
    for forged in ("abc", "W10", paging.encode(moment, document)[:-4]):
        with pytest.raises(errors.InvalidArgument):
            paging.decode(forged)
    assert paging.page_size(0) == paging.DEFAULT_PAGE_SIZE
    assert paging.page_size(5000) == paging.MAX_PAGE_SIZE


def test_point_ids_are_stable_per_revision_and_position() -> None:
    assert point_id("a", "d", 1, "chunk", 0) == point_id("a", "d", 1, "chunk", 0)
    assert point_id("a", "d", 1, "chunk", 0) != point_id("a", "d", 2, "chunk", 0)
    assert point_id("a", "d", 1, "chunk", 0) != point_id("b", "d", 1, "chunk", 0)
    uuid.UUID(point_id("a", "d", 1, "faq", 3))


def test_passages_get_bm25_terms_and_faq_questions_do_not() -> None:
    lexical = Lexical()
    found: list[tuple[str, tuple[str, str, dict[str, str]]]] = [
        ("Returns > Window\n\nShoes can be returned within 30 days.", ("chunk", "c0", {})),
        ("Can I return shoes?", ("faq", "q0", {})),
    ]
    passage, question = passage_terms(lexical, found)
    assert question is None
    assert passage is not None
    assert set(lexical.query("returned shoes").indices) <= set(passage.indices)  # stemmed
    assert all(weight > 0 for weight in passage.values)


def test_passages_carry_their_position_and_faq_questions_do_not() -> None:
    row: Any = SimpleNamespace(document_id="d", revision=3, source_uri="", labels={})
    texts: list[tuple[str, str, dict[str, Any]]] = [
        ("faq", "q0", {}), ("chunk", "q0", {}), ("faq", "q1", {}), ("chunk", "q1", {}),
    ]  # fmt: skip
    points = build_points("a", row, "FAQ", texts, [[1.0, 0.0]] * 4)
    assert [p.payload.get("position") for p in points] == [None, 0, None, 1]
    assert [p.payload["kind"] for p in points] == ["faq", "chunk", "faq", "chunk"]
