"""The vector index port: one small interface, two Qdrant adapters (in-process edge, server).

Multitenancy the way Qdrant recommends it: one collection for every tenant, each point
carrying its tenant in the payload under a keyword index marked ``is_tenant``, so the engine
stores a tenant's points together and every query filters on it. The tenant of a query is
always the verified caller's (the search layer passes it from services.kit.tenancy); no
method here searches without one.

The collection is named after the embedding model and dimension (and the layout of its
vectors), and records both (with a generation id) as its metadata: a different model opens a
different, empty collection and the documents are queued again, so vectors of two models are
never compared.

Passages are found by hybrid search: every chunk point has a dense vector (``dense``) and a
BM25 term vector (``terms``, IDF applied by the index); a query with terms asks for both
rankings in one call and :func:`fuse` merges them by reciprocal rank (RRF). The score a hit
carries is always the cosine similarity of its dense vector to the query, so thresholds keep
their meaning.

A third ranking is of documents: each document's first passage (``position`` 0, its lead: the
title and opening, which say what the document is about) stands for the document, and the
same call asks for the leads nearest the query. A passage whose document ranks there gets
that rank's vote too, so a passage of the document that is *about* the question outranks one
that merely mentions it (a "see also" line, a reference, another product's comparison).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from services.knowledge.lexical import Terms

TENANT = "tenant_id"
DOCUMENT = "document_id"
REVISION = "revision"
KIND = "kind"
POSITION = "position"  # a passage's place in its document: 0 is the lead
LABELS = "labels"
PointKind = Literal["chunk", "faq"]
DENSE = "dense"
TERMS = "terms"
LAYOUT = "hybrid-lead"  # vectors and ranked fields of a point: a new layout is a new collection
FUSION_K = 20  # RRF's k: how fast a ranking's weight falls with rank
MIN_SHARED_TERMS = 2  # query terms a passage must share for the BM25 ranking to count it
CANDIDATES = 40  # how many hits each ranking contributes to the fusion, at least
LEADS = 10  # documents the lead ranking contributes


@dataclass(frozen=True)
class IndexMeta:
    """What the vectors in an index are: model, dimension, and which build of it."""

    model: str
    dimension: int
    generation: str

    def as_payload(self) -> dict[str, Any]:
        """The metadata as stored with the index."""
        return {"model": self.model, "dimension": self.dimension, "generation": self.generation}


@dataclass(frozen=True)
class Point:
    """One vector with its payload (tenant, document, revision, kind, labels, text …)."""

    id: str
    vector: Sequence[float]
    payload: Mapping[str, Any]
    terms: Terms | None = None


@dataclass(frozen=True)
class Hit:
    """A point that matched a query, with its cosine similarity."""

    id: str
    score: float
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class Query:
    """A nearest-neighbour query inside one tenant."""

    tenant_id: str
    vector: Sequence[float]
    kind: PointKind
    limit: int
    labels: Mapping[str, str] = field(default_factory=dict)
    min_score: float | None = None
    terms: Terms | None = None
    documents: int = LEADS  # documents the lead ranking of a hybrid query brings (0: none)

    @property
    def candidates(self) -> int:
        """Hits each ranking of a hybrid query brings to the fusion."""
        return max(CANDIDATES, 4 * self.limit)


@dataclass(frozen=True)
class Removal:
    """Which points of one document to delete: all, older revisions, or one revision."""

    tenant_id: str
    document_id: str
    below_revision: int | None = None
    revision: int | None = None


class VectorIndex(Protocol):
    """What ingestion and search need from a vector store."""

    async def open(self, model: str, dimension: int) -> IndexMeta:
        """Open (or create) the collection for ``model``; its metadata."""
        ...

    async def upsert(self, points: Sequence[Point]) -> None:
        """Insert or replace points by id."""
        ...

    async def delete(self, removal: Removal) -> None:
        """Delete a document's points."""
        ...

    async def search(self, query: Query) -> list[Hit]:
        """The closest points of the query's tenant and kind, best first."""
        ...

    async def count(self, tenant_id: str, document_id: str = "") -> int:
        """Points of a tenant (or of one of its documents)."""
        ...

    async def close(self) -> None:
        """Flush and release the index."""
        ...


def collection_name(model: str, dimension: int) -> str:
    """``knowledge_<model slug>_<dimension>_<layout>``: one collection per model and layout."""
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")
    return f"knowledge_{slug}_{dimension}_{LAYOUT}"


def cosines(query: Sequence[float], vectors: Sequence[Sequence[float]]) -> list[float]:
    """Cosine similarity of the query to each of ``vectors`` (one matrix product)."""
    if not vectors:
        return []
    matrix = np.asarray(vectors, np.float32)
    a = np.asarray(query, np.float32)
    norms = np.linalg.norm(matrix, axis=1) * float(np.linalg.norm(a))
    dots = matrix @ a
    return [float(d / n) if n else 0.0 for d, n in zip(dots, norms, strict=True)]


def bm25_candidates(
    query: Query, points: Sequence[Any], sparse_type: type, source: str
) -> list[Candidate]:
    """BM25 hits (an adapter's scored points) with their cosine scores and their terms.

    Each point must have come back with its dense vector and its ``sparse_type`` terms.
    """
    dense: list[Sequence[float]] = []
    terms: list[Any] = []
    for point in points:
        vectors = point.vector if isinstance(point.vector, dict) else {}
        found, sparse = vectors.get(DENSE), vectors.get(TERMS)
        if not isinstance(found, list) or not isinstance(sparse, sparse_type):
            raise RuntimeError(f"{source} returned a BM25 hit without its vectors")
        dense.append(found)
        terms.append(sparse)
    scores = cosines(query.vector, dense)
    return [
        Candidate(str(p.id), score, p.payload or {}, frozenset(t.indices))
        for p, score, t in zip(points, scores, terms, strict=True)
    ]


@dataclass(frozen=True)
class Candidate:
    """A hit of one ranking before fusion: cosine score, and its terms when lexical."""

    id: str
    score: float
    payload: Mapping[str, Any]
    terms: frozenset[int] = frozenset()


def fuse(
    query: Query,
    dense: Sequence[Candidate],
    lexical: Sequence[Candidate],
    leads: Sequence[Candidate] = (),
) -> list[Hit]:
    """Reciprocal rank fusion of the dense, BM25 and document rankings, scored by cosine.

    A passage sharing a single word with a longer query is weak lexical evidence (in "how
    long does delivery abroad take", a passage on domestic shipping shares only "take"), so
    the BM25 ranking votes only for passages sharing at least ``MIN_SHARED_TERMS`` of the
    query's terms (every term of a shorter query). ``leads`` ranks documents by their lead
    passage: every candidate of a ranked document gets that rank's vote (it adds no
    candidates of its own). Ties go to the closer meaning.
    """
    asked = frozenset(query.terms.indices) if query.terms is not None else frozenset()
    needed = min(MIN_SHARED_TERMS, len(asked))
    votes: dict[str, float] = {}
    found: dict[str, Candidate] = {}
    voting = [c for c in lexical if len(c.terms & asked) >= needed]
    for ranking in (dense, voting):
        for rank, candidate in enumerate(ranking):
            votes[candidate.id] = votes.get(candidate.id, 0.0) + 1.0 / (FUSION_K + rank + 1)
            found.setdefault(candidate.id, candidate)
    documents: dict[Any, int] = {}
    for lead in leads:
        documents.setdefault(lead.payload.get(DOCUMENT), len(documents))
    for pid, candidate in found.items():
        document_rank = documents.get(candidate.payload.get(DOCUMENT))
        if document_rank is not None:
            votes[pid] += 1.0 / (FUSION_K + document_rank + 1)
    order = sorted(votes, key=lambda pid: (-votes[pid], -found[pid].score))
    hits = [Hit(pid, found[pid].score, found[pid].payload) for pid in order]
    if query.min_score is not None:
        hits = [hit for hit in hits if hit.score >= query.min_score]
    return hits[: query.limit]


def label_key(key: str) -> str:
    """The payload path of a label (keys are validated at ingestion to be path-safe)."""
    return f"{LABELS}.{key}"


def check_meta(found: Mapping[str, Any], model: str, dimension: int) -> bool:
    """Whether stored index metadata describes vectors of ``model`` at ``dimension``."""
    return bool(found.get("model") == model and found.get("dimension") == dimension)
