"""Search: the closest passages of the caller's tenant, and FAQ entries that answer directly.

Passages come from hybrid search (meaning and exact words, fused by rank: see
services.knowledge.index); FAQ questions are matched by meaning alone, against a cosine
threshold. Both index queries go out together once the query's vector is known.

The tenant is the verified caller's, passed in by the servicer from services.kit.tenancy; the
index filters on it, and every hit is checked against it once more before it leaves, so a
bug in a filter shows up as a dropped hit and an error log, never as another tenant's text.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from services.kit import errors
from services.knowledge import index as ix
from services.knowledge.ingest import check_labels
from services.knowledge.lexical import Lexical
from services.knowledge.query_vectors import QueryVectors
from services.knowledge.tenant_settings import TenantSettings, resolve
from supportmesh.knowledge.v1 import knowledge_service_pb2 as pb
from supportmesh.spec.v1 import message_pb2

_log = logging.getLogger("supportmesh.knowledge.search")
DEFAULT_TOP_K = 5
MAX_TOP_K = 50
MAX_QUERY_CHARS = 2000
FAQ_ANSWERS = 3


def _citation(payload: Mapping[str, Any]) -> message_pb2.Citation:
    return message_pb2.Citation(
        document_id=str(payload.get("document_id", "")),
        title=str(payload.get("title", "")),
        chunk_id=str(payload.get("chunk_id", "")),
        uri=str(payload.get("source_uri", "")),
    )


def top_k(requested: int) -> int:
    """Passages to return: 0 means 5, values above 50 are capped."""
    if requested < 0:
        raise errors.InvalidArgument("top_k must not be negative", field="top_k")
    return min(requested or DEFAULT_TOP_K, MAX_TOP_K)


class Searcher:
    """Answers Search over one index."""

    def __init__(
        self,
        index: ix.VectorIndex,
        queries: QueryVectors,
        settings: TenantSettings,
        lexical: Lexical | None = None,
    ) -> None:
        """Search ``index`` with vectors from ``queries``; thresholds from ``settings``."""
        self._index = index
        self._queries = queries
        self._settings = settings
        self._lexical = lexical or Lexical()

    def _own(self, tenant_id: str, hits: list[ix.Hit]) -> list[ix.Hit]:
        kept = [hit for hit in hits if hit.payload.get(ix.TENANT) == tenant_id]
        if len(kept) != len(hits):
            _log.error("the index returned another tenant's points; dropped them")
        return kept

    async def search(self, tenant_id: str, request: pb.SearchRequest) -> pb.SearchResponse:
        """Passages and direct FAQ answers for the request's query, inside ``tenant_id``."""
        query = request.query.strip()
        if not query:
            raise errors.InvalidArgument("query must not be empty", field="query")
        if len(query) > MAX_QUERY_CHARS:
            raise errors.InvalidArgument(
                f"query is longer than {MAX_QUERY_CHARS} characters", field="query"
            )
        if not -1.0 <= request.min_score <= 1.0 or not 0.0 <= request.faq_threshold <= 1.0:
            raise errors.InvalidArgument("scores are cosine similarities", field="min_score")
        labels = check_labels(dict(request.filters), "filters")
        limit = top_k(request.top_k)
        stored, vector = await asyncio.gather(
            self._settings.faq_threshold(tenant_id), self._queries.vector(query)
        )
        threshold = resolve(request.faq_threshold, stored)
        values = [float(x) for x in vector]
        terms = self._lexical.query(query)
        lexical = terms if terms.indices else None  # a query of stop words only: meaning alone
        min_score = request.min_score or None
        passages, faqs = await asyncio.gather(
            self._index.search(
                ix.Query(tenant_id, values, "chunk", limit, labels, min_score, lexical)
            ),
            self._index.search(ix.Query(tenant_id, values, "faq", FAQ_ANSWERS, labels, threshold)),
        )
        return pb.SearchResponse(
            passages=[
                pb.Passage(
                    score=hit.score,
                    document_id=str(hit.payload.get("document_id", "")),
                    title=str(hit.payload.get("title", "")),
                    chunk_id=str(hit.payload.get("chunk_id", "")),
                    text=str(hit.payload.get("text", "")),
                    citation=_citation(hit.payload),
                )
                for hit in self._own(tenant_id, passages)
            ],
            faq_answers=[
                pb.FaqAnswer(
                    score=hit.score,
                    question=str(hit.payload.get("question", "")),
                    answer=str(hit.payload.get("answer", "")),
                    document_id=str(hit.payload.get("document_id", "")),
                    citation=_citation(hit.payload),
                )
                for hit in self._own(tenant_id, faqs)
                if hit.score >= threshold
            ],
        )
