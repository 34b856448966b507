"""Reciprocal rank fusion of the dense, BM25 and document rankings, and the scores hits keep."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from services.knowledge.index import Candidate, Query, bm25_candidates, cosines, fuse
from services.knowledge.lexical import Terms

ASKED = Terms((1, 2, 3, 4), (1.0, 1.0, 1.0, 1.0))


def _query(**fields: object) -> Query:
    return Query("t", [1.0, 0.0], "chunk", 3, terms=ASKED, **fields)  # type: ignore[arg-type]


def _c(pid: str, score: float, *terms: int, document: str = "") -> Candidate:
    return Candidate(pid, score, {"id": pid, "document_id": document or pid}, frozenset(terms))


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


def test_a_passage_of_the_document_the_leads_rank_outranks_one_that_mentions_the_topic() -> None:
    # "see also" of another document names the topic; the topic's own document has a lead
    dense = [_c("see-also", 0.8, document="other"), _c("own-c3", 0.7, document="topic")]
    assert [h.id for h in fuse(_query(), dense, [])][:1] == ["see-also"]
    leads = [_c("topic-c0", 0.6, document="topic")]  # "other" is about something else
    assert [h.id for h in fuse(_query(), dense, [], leads)] == ["own-c3", "see-also"]


def test_leads_vote_but_bring_no_passages_of_their_own() -> None:
    dense = [_c("a", 0.9, document="d1")]
    leads = [_c("d2-c0", 0.9, document="d2"), _c("d1-c0", 0.5, document="d1")]
    hits = fuse(_query(), dense, [], leads)
    assert [(h.id, h.score) for h in hits] == [("a", 0.9)]


def test_cosines() -> None:
    assert cosines([2.0, 0.0], [[1.0, 0.0], [0.0, 3.0], [0.0, 0.0]]) == [1.0, 0.0, 0.0]
    assert cosines([0.0, 0.0], [[1.0, 0.0]]) == [0.0]
    assert cosines([1.0, 0.0], []) == []


def test_bm25_hits_are_scored_by_cosine_and_must_bring_their_vectors() -> None:
    vectors = {"dense": [0.0, 2.0], "terms": Terms((1, 2), (1.0, 1.0))}
    hit = SimpleNamespace(id="a", vector=vectors, payload={"x": 1})
    (found,) = bm25_candidates(_query(), [hit], Terms, "the index")
    assert (found.id, found.score, found.terms) == ("a", 0.0, frozenset({1, 2}))
    bare = SimpleNamespace(id="b", vector=None, payload={})
    with pytest.raises(RuntimeError, match="the index returned a BM25 hit without its vectors"):
        bm25_candidates(_query(), [bare], Terms, "the index")
