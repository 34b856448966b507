"""The in-process qdrant-edge index: tenant filters, revisions, metadata and generations."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from services.knowledge.edge_index import EdgeIndex
from services.knowledge.index import Point, Query, Removal
from services.knowledge.lexical import Lexical


def _point(tenant: str, document: str, revision: int, vector: list[float]) -> Point:
    payload = {
        "tenant_id": tenant, "document_id": document, "revision": revision, "kind": "chunk",
        "labels": {"locale": "en" if tenant == "a" else "de"},
    }  # fmt: skip
    return Point(str(uuid.uuid4()), vector, payload)


async def test_search_stays_inside_the_tenant_and_its_labels(tmp_path: Path) -> None:
    index = EdgeIndex(tmp_path)
    await index.open("m", 2)
    try:
        await index.upsert([_point("a", "d1", 1, [1, 0]), _point("b", "d2", 1, [1, 0.01])])
        hits = await index.search(Query("a", [1, 0], "chunk", 10))
        assert [h.payload["tenant_id"] for h in hits] == ["a"]
        assert await index.search(Query("a", [1, 0], "chunk", 10, {"locale": "de"})) == []
        assert await index.search(Query("a", [1, 0], "faq", 10)) == []
        assert await index.search(Query("a", [0, 1], "chunk", 10, min_score=0.5)) == []
    finally:
        await index.close()


async def test_removals_by_revision(tmp_path: Path) -> None:
    index = EdgeIndex(tmp_path)
    await index.open("m", 2)
    try:
        await index.upsert([_point("a", "d", r, [1, r]) for r in (1, 2, 3)])
        await index.delete(Removal("a", "d", below_revision=3))
        assert await index.count("a", "d") == 1
        await index.delete(Removal("a", "d", revision=3))
        assert await index.count("a") == 0
    finally:
        await index.close()


async def test_the_generation_survives_a_reopen_and_a_new_model_gets_a_new_index(
    tmp_path: Path,
) -> None:
    index = EdgeIndex(tmp_path)
    first = await index.open("m", 2)
    await index.upsert([_point("a", "d", 1, [1, 0])])
    await index.close()
    again = EdgeIndex(tmp_path)
    assert (await again.open("m", 2)).generation == first.generation
    assert await again.count("a") == 1
    await again.close()
    other = EdgeIndex(tmp_path)
    changed = await other.open("other-model", 3)
    try:
        assert changed.generation != first.generation
        assert await other.count("a") == 0  # never mixed with the old model's vectors
    finally:
        await other.close()


def _passage(tenant: str, text: str, vector: list[float], lexical: Lexical) -> Point:
    payload = {"tenant_id": tenant, "document_id": text, "revision": 1, "kind": "chunk"}
    return Point(str(uuid.uuid4()), vector, payload, lexical.passage(text))


async def test_hybrid_search_finds_exact_words_the_vectors_miss(tmp_path: Path) -> None:
    lexical = Lexical()
    index = EdgeIndex(tmp_path)
    await index.open("m", 2)
    try:
        await index.upsert([
            _passage("a", "Error E4711 means the filter is clogged.", [0.0, 1.0], lexical),
            _passage("a", "Descale the machine every month.", [1.0, 0.0], lexical),
            _passage("a", "The warranty lasts two years.", [0.9, 0.1], lexical),
            _passage("b", "Error E4711 at tenant b.", [0.0, 1.0], lexical),
        ])  # fmt: skip
        dense = await index.search(Query("a", [1.0, 0.0], "chunk", 1))
        assert [h.payload["document_id"] for h in dense] == ["Descale the machine every month."]
        terms = lexical.query("what does E4711 mean")
        hybrid = await index.search(Query("a", [1.0, 0.0], "chunk", 3, terms=terms))
        documents = [h.payload["document_id"] for h in hybrid]
        assert "Error E4711 means the filter is clogged." in documents[:2]
        assert {h.payload["tenant_id"] for h in hybrid} == {"a"}
        exact = {h.payload["document_id"]: h.score for h in hybrid}
        assert exact["Descale the machine every month."] == pytest.approx(1.0)  # a cosine
        assert exact["Error E4711 means the filter is clogged."] == pytest.approx(0.0, abs=1e-6)
        cut = await index.search(Query("a", [1.0, 0.0], "chunk", 3, min_score=0.5, terms=terms))
        assert all(h.score >= 0.5 for h in cut)
        assert len(cut) == 2
    finally:
        await index.close()


def _article(tenant: str, document: str, texts: list[tuple[str, list[float]]]) -> list[Point]:
    lexical = Lexical()
    return [
        Point(str(uuid.uuid4()), vector, {
            "tenant_id": tenant, "document_id": document, "revision": 1, "kind": "chunk",
            "position": position, "text": text,
        }, lexical.passage(text))
        for position, (text, vector) in enumerate(texts)
    ]  # fmt: skip


async def test_the_document_whose_lead_matches_outranks_a_passing_mention(tmp_path: Path) -> None:
    lexical = Lexical()
    index = EdgeIndex(tmp_path)
    await index.open("m", 3)
    try:
        await index.upsert([
            *_article("a", "descaling", [
                ("How to descale your espresso machine.", [1.0, 0.0, 0.0]),
                ("Mix one part vinegar with two parts water.", [0.6, 0.8, 0.0]),
            ]),
            *_article("a", "warranty", [
                ("What the warranty covers.", [0.0, 0.0, 1.0]),
                ("See also: vinegar and water for descaling.", [0.7, 0.7, 0.0]),
            ]),
            # another tenant's lead of the same topic must not lend its vote
            *_article("b", "warranty", [("How to descale", [1.0, 0.0, 0.0])]),
        ])  # fmt: skip
        terms = lexical.query("descale with vinegar and water")
        query = [0.7, 0.7, 0.1]
        plain = await index.search(Query("a", query, "chunk", 2, terms=terms, documents=0))
        assert plain[0].payload["document_id"] == "warranty"  # the mention is closest
        # the best-matching lead votes (of two documents here; of ten among many by default)
        ranked = await index.search(Query("a", query, "chunk", 2, terms=terms, documents=1))
        assert [h.payload["text"] for h in ranked] == [
            "Mix one part vinegar with two parts water.",
            "See also: vinegar and water for descaling.",
        ]
        assert {h.payload["tenant_id"] for h in ranked} == {"a"}
    finally:
        await index.close()
