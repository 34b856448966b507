"""Reciprocal rank fusion of the dense and BM25 rankings, and the scores hits keep."""

from __future__ import annotations

from services.knowledge.index import Candidate, Query, cosine, fuse
from services.knowledge.lexical import Terms

ASKED = Terms((1, 2, 3, 4), (1.0, 1.0, 1.0, 1.0))


def _query(**fields: object) -> Query:
    return Query("t", [1.0, 0.0], "chunk", 3, terms=ASKED, **fields)  # type: ignore[arg-type]


def _c(pid: str, score: float, *terms: int) -> Candidate:
    return Candidate(pid, score, {"id": pid}, frozenset(terms))


def test_a_passage_both_rankings_like_comes_first() -> None:
    dense = [_c("a", 0.9), _c("b", 0.8), _c("c", 0.7)]
    lexical = [_c("c", 0.7, 1, 2, 3), _c("b", 0.8, 1, 2)]
    assert [h.id for h in fuse(_query(), dense, lexical)] == ["c", "b", "a"]


def test_hits_keep_their_cosine_score_and_min_score_cuts_by_it() -> None:
    dense = [_c("a", 0.9)]
    lexical = [_c("z", 0.1, 1, 2, 3, 4), _c("a", 0.9, 1, 2)]
    hits = fuse(_query(), dense, lexical)
    assert [(h.id, h.score) for h in hits] == [("a", 0.9), ("z", 0.1)]
    assert [h.id for h in fuse(_query(min_score=0.5), dense, lexical)] == ["a"]


def test_one_shared_word_is_not_lexical_evidence() -> None:
    dense = [_c("abroad", 0.69), _c("domestic", 0.62)]
    lexical = [_c("domestic", 0.62, 4)]  # shares "take" only
    assert [h.id for h in fuse(_query(), dense, lexical)] == ["abroad", "domestic"]
    one_term = Query("t", [1.0, 0.0], "chunk", 3, terms=Terms((4,), (1.0,)))
    assert [h.id for h in fuse(one_term, dense, lexical)] == ["domestic", "abroad"]


def test_the_limit_applies_after_fusion() -> None:
    dense = [_c(str(n), 1.0 - n / 10) for n in range(6)]
    assert len(fuse(_query(), dense, [])) == 3


def test_cosine() -> None:
    assert cosine([2.0, 0.0], [1.0, 0.0]) == 1.0
    assert cosine([0.0, 0.0], [1.0, 0.0]) == 0.0
