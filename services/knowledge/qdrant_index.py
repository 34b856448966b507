"""The production index: a Qdrant server (``QDRANT_URL``) through ``qdrant-client``.

The collection follows Qdrant's multitenancy guide: the global HNSW graph is off (``m=0``)
and each tenant gets its own (``payload_m``), built over the ``tenant_id`` keyword index
marked ``is_tenant``; queries always filter on the tenant. Several replicas may open the
collection at once: whoever creates it first wins, the others read its metadata.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

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


def _match(key: str, value: str | int) -> models.FieldCondition:
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


def query_filter(query: Query) -> models.Filter:
    """The tenant, kind and label conditions of a query."""
    must: list[models.Condition] = [_match(TENANT, query.tenant_id), _match(KIND, query.kind)]
    must += [_match(label_key(key), value) for key, value in sorted(query.labels.items())]
    return models.Filter(must=must)


def removal_filter(removal: Removal) -> models.Filter:
    """The points a removal deletes."""
    must: list[models.Condition] = [
        _match(TENANT, removal.tenant_id),
        _match(DOCUMENT, removal.document_id),
    ]
    if removal.below_revision is not None:
        must.append(
            models.FieldCondition(key=REVISION, range=models.Range(lt=removal.below_revision))
        )
    if removal.revision is not None:
        must.append(_match(REVISION, removal.revision))
    return models.Filter(must=must)


def point_structs(points: Sequence[Point]) -> list[models.PointStruct]:
    """Points as qdrant-client structs."""
    return [
        models.PointStruct(id=p.id, vector=[float(x) for x in p.vector], payload=dict(p.payload))
        for p in points
    ]


def collection_config(dimension: int, meta: IndexMeta) -> dict[str, object]:
    """Arguments of ``create_collection``: cosine vectors, per-tenant HNSW, metadata."""
    return {
        "vectors_config": models.VectorParams(size=dimension, distance=models.Distance.COSINE),
        "hnsw_config": models.HnswConfigDiff(m=0, payload_m=16),
        "metadata": meta.as_payload(),
    }


PAYLOAD_INDEXES: tuple[tuple[str, models.PayloadSchemaType | models.KeywordIndexParams], ...] = (
    (TENANT, models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True)),
    (DOCUMENT, models.PayloadSchemaType.KEYWORD),
    (KIND, models.PayloadSchemaType.KEYWORD),
    (REVISION, models.PayloadSchemaType.INTEGER),
)


class QdrantIndex:
    """A :class:`services.knowledge.index.VectorIndex` on a Qdrant server."""

    def __init__(self, url: str, api_key: str = "", timeout_s: int = 10) -> None:
        """Talk to the server at ``url``."""
        self._client = AsyncQdrantClient(url=url, api_key=api_key or None, timeout=timeout_s)
        self._collection = ""
        self.meta: IndexMeta | None = None

    async def open(self, model: str, dimension: int) -> IndexMeta:
        """Open (or create) the collection for ``model``; its metadata."""
        self._collection = collection_name(model, dimension)
        if not await self._client.collection_exists(self._collection):
            meta = IndexMeta(model, dimension, uuid.uuid4().hex)
            try:
                await self._client.create_collection(
                    self._collection,
                    **collection_config(dimension, meta),  # type: ignore[arg-type]
                )
                for name, schema in PAYLOAD_INDEXES:
                    await self._client.create_payload_index(self._collection, name, schema)
            except UnexpectedResponse as exc:
                if exc.status_code != 409:  # another replica created it first
                    raise
        info = await self._client.get_collection(self._collection)
        found = dict(info.config.metadata or {})
        if not check_meta(found, model, dimension):
            raise RuntimeError(
                f"collection {self._collection} holds vectors of {found}, not {model}/{dimension}"
            )
        self.meta = IndexMeta(model, dimension, str(found["generation"]))
        return self.meta

    async def upsert(self, points: Sequence[Point]) -> None:
        """Insert or replace points by id."""
        if points:
            await self._client.upsert(self._collection, point_structs(points), wait=True)

    async def delete(self, removal: Removal) -> None:
        """Delete a document's points."""
        selector = models.FilterSelector(filter=removal_filter(removal))
        await self._client.delete(self._collection, selector, wait=True)

    async def search(self, query: Query) -> list[Hit]:
        """The closest points of the query's tenant and kind, best first."""
        reply = await self._client.query_points(
            self._collection,
            query=[float(x) for x in query.vector],
            query_filter=query_filter(query),
            limit=query.limit,
            with_payload=True,
            score_threshold=query.min_score,
        )
        return [Hit(str(p.id), float(p.score), p.payload or {}) for p in reply.points]

    async def count(self, tenant_id: str, document_id: str = "") -> int:
        """Points of a tenant (or of one of its documents)."""
        must: list[models.Condition] = [_match(TENANT, tenant_id)]
        if document_id:
            must.append(_match(DOCUMENT, document_id))
        reply = await self._client.count(
            self._collection, count_filter=models.Filter(must=must), exact=True
        )
        return int(reply.count)

    async def close(self) -> None:
        """Close the client."""
        await self._client.close()
