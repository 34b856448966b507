"""The vector index port: one small interface, two Qdrant adapters (in-process edge, server).

Multitenancy the way Qdrant recommends it: one collection for every tenant, each point
carrying its tenant in the payload under a keyword index marked ``is_tenant``, so the engine
stores a tenant's points together and every query filters on it. The tenant of a query is
always the verified caller's (the search layer passes it from services.kit.tenancy); no
method here searches without one.

The collection is named after the embedding model and dimension, and records both (with a
generation id) as its metadata: a different model opens a different, empty collection and
the documents are queued again, so vectors of two models are never compared.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

TENANT = "tenant_id"
DOCUMENT = "document_id"
REVISION = "revision"
KIND = "kind"
LABELS = "labels"
PointKind = Literal["chunk", "faq"]


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
    """``knowledge_<model slug>_<dimension>``: one collection per embedding model."""
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")
    return f"knowledge_{slug}_{dimension}"


def label_key(key: str) -> str:
    """The payload path of a label (keys are validated at ingestion to be path-safe)."""
    return f"{LABELS}.{key}"


def check_meta(found: Mapping[str, Any], model: str, dimension: int) -> bool:
    """Whether stored index metadata describes vectors of ``model`` at ``dimension``."""
    return bool(found.get("model") == model and found.get("dimension") == dimension)
