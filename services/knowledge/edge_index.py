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
    DOCUMENT,
    KIND,
    REVISION,
    TENANT,
    Hit,
    IndexMeta,
    Point,
    Query,
    Removal,
    check_meta,
    collection_name,
    label_key,
)


def _match(key: str, value: str | int) -> qe.FieldCondition:
    return qe.FieldCondition(key, match=qe.MatchValue(value))


def query_filter(query: Query) -> qe.Filter:
    """The tenant, kind and label conditions of a query."""
    must: list[qe.FieldCondition] = [_match(TENANT, query.tenant_id), _match(KIND, query.kind)]
    must += [_match(label_key(key), value) for key, value in sorted(query.labels.items())]
    return qe.Filter(must=list(must))


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
        vectors = qe.EdgeVectorParams(size=dimension, distance=qe.Distance.Cosine)
        shard = qe.EdgeShard.create(str(shard_path), qe.EdgeConfig(vectors=vectors))
        shard.update(
            qe.UpdateOperation.create_field_index(TENANT, qe.KeywordIndexParams(is_tenant=True))
        )
        for name in (DOCUMENT, KIND):
            shard.update(qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Keyword))
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
        batch = [qe.Point(p.id, list(p.vector), dict(p.payload)) for p in points]
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
        request = qe.QueryRequest(
            limit=query.limit,
            query=qe.Query.Nearest([float(x) for x in query.vector]),
            filter=query_filter(query),
            with_payload=True,
            score_threshold=query.min_score,
        )
        found = await asyncio.to_thread(self.shard.query, request)
        return [Hit(str(point.id), float(point.score), point.payload or {}) for point in found]

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
