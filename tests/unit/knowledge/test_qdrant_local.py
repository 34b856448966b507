"""The Qdrant server adapter end to end on qdrant-client's local mode (Qdrant's semantics).

No Qdrant server ships as a package that installs offline, so the adapter's whole path runs
here against the client's in-process implementation of the same API: collection config with
BM25 IDF and metadata, the batched dense/BM25/lead query, tenant filters, counts, deletes.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import AsyncIterator

import pytest
from qdrant_client import AsyncQdrantClient

from services.knowledge.index import Point, Query, Removal
from services.knowledge.lexical import Lexical
from services.knowledge.qdrant_index import QdrantIndex

LEXICAL = Lexical()


@pytest.fixture
async def index() -> AsyncIterator[QdrantIndex]:
    found = QdrantIndex("", client=AsyncQdrantClient(location=":memory:"))
    with warnings.catch_warnings():  # payload indexes are a no-op in local mode
        warnings.simplefilter("ignore", UserWarning)
        await found.open("m", 3)
    yield found
    await found.close()


def _article(tenant: str, document: str, revision: int, texts: list[str]) -> list[Point]:
    vectors = {0: [1.0, 0.0, 0.0], 1: [0.6, 0.8, 0.0], 2: [0.0, 0.0, 1.0]}
    return [
        Point(str(uuid.uuid4()), vectors[position % 3], {
            "tenant_id": tenant, "document_id": document, "revision": revision,
            "kind": "chunk", "position": position, "text": text, "labels": {},
        }, LEXICAL.passage(text))
        for position, text in enumerate(texts)
    ]  # fmt: skip


async def test_hybrid_search_stays_in_the_tenant_and_keeps_cosine_scores(
    index: QdrantIndex,
) -> None:
    texts = ["How to descale your espresso machine.", "Mix vinegar with water."]
    await index.upsert(_article("a", "descale", 1, texts) + _article("b", "descale", 1, texts))
    query = Query("a", [0.7, 0.7, 0.1], "chunk", 3, terms=LEXICAL.query("descale with vinegar"))
    hits = await index.search(query)
    assert [h.payload["text"] for h in hits] == ["Mix vinegar with water.", texts[0]]
    assert {h.payload["tenant_id"] for h in hits} == {"a"}
    assert hits[0].score == pytest.approx(0.985, abs=1e-3)  # the cosine, not a fused score
    assert (await index.count("a"), await index.count("b", "descale")) == (2, 2)


async def test_removals_by_revision_and_of_whole_documents(index: QdrantIndex) -> None:
    await index.upsert(_article("a", "d", 1, ["old one", "old two"]))
    await index.upsert(_article("a", "d", 2, ["new one"]))
    await index.delete(Removal("a", "d", below_revision=2))
    assert await index.count("a", "d") == 1
    await index.delete(Removal("a", "d"))
    assert await index.count("a") == 0


async def test_reopening_reads_the_generation_back(index: QdrantIndex) -> None:
    again = QdrantIndex("", client=index._client)  # another replica of the same server
    meta = await again.open("m", 3)
    assert index.meta is not None
    assert meta == index.meta
