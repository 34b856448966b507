"""The embedded default index: Qdrant's engine in-process (``qdrant-edge-py``), one process only.

qdrant-client's local mode filters in Python (140–165 ms for a tenant-filtered query over
50,000 points); the edge shard runs Qdrant's own segment and payload-index code, about 1 ms.
It keeps a write-ahead log, so a process killed mid-write reopens with what it had applied,
and it locks the directory: a second process cannot open the same index. That is why, in the
embedded default, the knowledge service runs the ingestion consumer itself.

Layout: ``<path>/<collection>/shard`` (the shard) and ``<path>/<collection>/meta.json``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from services.knowledge.index import (
    DENSE,
    DOCUMENT,
    KIND,
    POSITION,
    REVISION,
    TENANT,
    TERMS,
    Candidate,
    Hit,
    IndexMeta,
    Point,
    Query,
    Removal,
    bm25_candidates,
    check_meta,
    collection_name,
    fuse,
    label_key,
)
from services.knowledge.lexical import Terms


def _match(key: str, value: str | int) -> qe.FieldCondition:
    return qe.FieldCondition(key, match=qe.MatchValue(value))


def query_filter(query: Query, *, leads: bool = False) -> qe.Filter:
    """The tenant, kind and label conditions of a query (and lead passages only, if asked)."""
    must: list[qe.FieldCondition] = [_match(TENANT, query.tenant_id), _match(KIND, query.kind)]
    must += [_match(label_key(key), value) for key, value in sorted(query.labels.items())]
    if leads:
        must.append(_match(POSITION, 0))
    return qe.Filter(must=list(must))


def _sparse(terms: Terms) -> qe.SparseVector:
    return qe.SparseVector(list(terms.indices), list(terms.values))


def point_vectors(point: Point) -> dict[str, list[float] | qe.SparseVector | list[list[float]]]:
    """A point's named vectors: the dense one, and its terms when it has them."""
    vectors: dict[str, list[float] | qe.SparseVector | list[list[float]]] = {
        DENSE: [float(x) for x in point.vector]
    }
    if point.terms is not None:
        vectors[TERMS] = _sparse(point.terms)
    return vectors


def query_requests(query: Query) -> list[qe.QueryRequest]:
    """Nearest dense neighbours; with terms, also BM25's best (with vectors) and the leads."""
    where = query_filter(query)
    dense = [float(x) for x in query.vector]
    requests = [
        qe.QueryRequest(
            limit=query.limit if query.terms is None else query.candidates,
            query=qe.Query.Nearest(dense, using=DENSE),
            filter=where,
            with_payload=True,
            score_threshold=query.min_score,
        )
    ]
    if query.terms is not None:
        requests.append(
            qe.QueryRequest(
                limit=query.candidates,
                query=qe.Query.Nearest(_sparse(query.terms), using=TERMS),
                filter=where,
                with_payload=True,
                with_vector=[DENSE, TERMS],
            )
        )
    if query.terms is not None and query.documents > 0:
        requests.append(
            qe.QueryRequest(
                limit=query.documents,
                query=qe.Query.Nearest(dense, using=DENSE),
                filter=query_filter(query, leads=True),
                with_payload=[DOCUMENT],
            )
        )
    return requests


def removal_filter(removal: Removal) -> qe.Filter:
    """The points a removal deletes."""
    must = [_match(TENANT, removal.tenant_id), _match(DOCUMENT, removal.document_id)]
    if removal.below_revision is not None:
        must.append(qe.FieldCondition(REVISION, range=qe.RangeFloat(lt=removal.below_revision)))
    if removal.revision is not None:
        must.append(_match(REVISION, removal.revision))
    return qe.Filter(must=list(must))


class EdgeIndex:
    """A :class:`services.knowledge.index.VectorIndex` on a local qdrant-edge shard."""

    def __init__(self, path: Path) -> None:
        """Keep the index under ``path`` (created when missing)."""
        self._root = path
        self._shard: qe.EdgeShard | None = None
        self._writes = asyncio.Lock()
        self.meta: IndexMeta | None = None

    @property
    def shard(self) -> qe.EdgeShard:
        """The open shard."""
        if self._shard is None:
            raise RuntimeError("the index is not open")
        return self._shard

    async def open(self, model: str, dimension: int) -> IndexMeta:
        """Open (or create) the collection for ``model``; its metadata."""
        self.meta = await asyncio.to_thread(self._open, model, dimension)
        return self.meta

    def _open(self, model: str, dimension: int) -> IndexMeta:
        home = self._root / collection_name(model, dimension)
        meta_path, shard_path = home / "meta.json", home / "shard"
        found: dict[str, Any] = {}
        if meta_path.exists():
            found = json.loads(meta_path.read_text())
        if check_meta(found, model, dimension) and shard_path.exists():
            self._shard = qe.EdgeShard.load(str(shard_path))
            return IndexMeta(model, dimension, str(found["generation"]))
        # No index, or one whose metadata does not match: start a new generation.
        shutil.rmtree(shard_path, ignore_errors=True)
        home.mkdir(parents=True, exist_ok=True)
        vectors = {DENSE: qe.EdgeVectorParams(size=dimension, distance=qe.Distance.Cosine)}
        terms = {TERMS: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)}
        config = qe.EdgeConfig(vectors=vectors, sparse_vectors=terms)
        shard = qe.EdgeShard.create(str(shard_path), config)
        shard.update(
            qe.UpdateOperation.create_field_index(TENANT, qe.KeywordIndexParams(is_tenant=True))
        )
        for name in (DOCUMENT, KIND):
            shard.update(qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Keyword))
        shard.update(qe.UpdateOperation.create_field_index(POSITION, qe.PayloadSchemaType.Integer))
        shard.update(qe.UpdateOperation.create_field_index(REVISION, qe.PayloadSchemaType.Integer))
        shard.flush()
        meta = IndexMeta(model, dimension, uuid.uuid4().hex)
        temporary = meta_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(meta.as_payload()))
        temporary.replace(meta_path)
        self._shard = shard
        return meta

    async def upsert(self, points: Sequence[Point]) -> None:
        """Insert or replace points by id."""
        batch = [qe.Point(p.id, point_vectors(p), dict(p.payload)) for p in points]
        if not batch:
            return
        async with self._writes:
            await asyncio.to_thread(self.shard.update, qe.UpdateOperation.upsert_points(batch))

    async def delete(self, removal: Removal) -> None:
        """Delete a document's points."""
        operation = qe.UpdateOperation.delete_points_by_filter(removal_filter(removal))
        async with self._writes:
            await asyncio.to_thread(self.shard.update, operation)

    async def search(self, query: Query) -> list[Hit]:
        """The closest points of the query's tenant and kind, best first."""
        shard = self.shard
        requests = query_requests(query)
        found = await asyncio.to_thread(lambda: [shard.query(r) for r in requests])
        dense = [Candidate(str(p.id), float(p.score), p.payload or {}) for p in found[0]]
        if query.terms is None:
            return [Hit(c.id, c.score, c.payload) for c in dense]
        leads = [Candidate(str(p.id), p.score, p.payload or {}) for r in found[2:] for p in r]
        return fuse(
            query, dense, bm25_candidates(query, found[1], qe.SparseVector, "the index"), leads
        )

    async def count(self, tenant_id: str, document_id: str = "") -> int:
        """Points of a tenant (or of one of its documents)."""
        must = [_match(TENANT, tenant_id)]
        if document_id:
            must.append(_match(DOCUMENT, document_id))
        request = qe.CountRequest(filter=qe.Filter(must=list(must)), exact=True)
        return int(await asyncio.to_thread(self.shard.count, request))

    async def close(self) -> None:
        """Flush and release the index."""
        if self._shard is not None:
            async with self._writes:
                shard, self._shard = self._shard, None
                await asyncio.to_thread(shard.flush)
                await asyncio.to_thread(shard.close)
