"""The production index: a Qdrant server (``QDRANT_URL``) through ``qdrant-client``.

The collection follows Qdrant's multitenancy guide: the global HNSW graph is off (``m=0``)
and each tenant gets its own (``payload_m``), built over the ``tenant_id`` keyword index
marked ``is_tenant``; queries always filter on the tenant. Several replicas may open the
collection at once: whoever creates it first wins, the others read its metadata. Hybrid
passage search is one ``query_batch_points`` call (a dense and a BM25 query, sparse with IDF);
the rankings are fused here (services.knowledge.index.fuse).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

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


def _match(key: str, value: str | int) -> models.FieldCondition:
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


def query_filter(query: Query, *, leads: bool = False) -> models.Filter:
    """The tenant, kind and label conditions of a query (and lead passages only, if asked)."""
    must: list[models.Condition] = [_match(TENANT, query.tenant_id), _match(KIND, query.kind)]
    must += [_match(label_key(key), value) for key, value in sorted(query.labels.items())]
    if leads:
        must.append(_match(POSITION, 0))
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


def _sparse(terms: Terms) -> models.SparseVector:
    return models.SparseVector(indices=list(terms.indices), values=list(terms.values))


def point_structs(points: Sequence[Point]) -> list[models.PointStruct]:
    """Points as qdrant-client structs: the dense vector, and the terms when present."""
    structs = []
    for p in points:
        vectors: dict[str, list[float] | models.SparseVector] = {
            DENSE: [float(x) for x in p.vector]
        }
        if p.terms is not None:
            vectors[TERMS] = _sparse(p.terms)
        structs.append(models.PointStruct(id=p.id, vector=vectors, payload=dict(p.payload)))
    return structs


def query_requests(query: Query) -> list[models.QueryRequest]:
    """Nearest dense neighbours; with terms, also BM25's best (with vectors) and the leads."""
    where = query_filter(query)
    requests = [
        models.QueryRequest(
            query=[float(x) for x in query.vector], using=DENSE, filter=where,
            limit=query.limit if query.terms is None else query.candidates,
            with_payload=True, score_threshold=query.min_score,
        )
    ]  # fmt: skip
    if query.terms is not None:
        requests.append(
            models.QueryRequest(
                query=_sparse(query.terms), using=TERMS, filter=where, limit=query.candidates,
                with_payload=True, with_vector=[DENSE, TERMS],
            )
        )  # fmt: skip
    if query.terms is not None and query.documents > 0:
        requests.append(
            models.QueryRequest(
                query=[float(x) for x in query.vector], using=DENSE,
                filter=query_filter(query, leads=True), limit=query.documents,
                with_payload=[DOCUMENT],
            )
        )  # fmt: skip
    return requests


def collection_config(dimension: int, meta: IndexMeta) -> dict[str, object]:
    """Arguments of ``create_collection``: cosine and BM25 vectors, per-tenant HNSW, metadata."""
    return {
        "vectors_config": {
            DENSE: models.VectorParams(size=dimension, distance=models.Distance.COSINE)
        },
        "sparse_vectors_config": {TERMS: models.SparseVectorParams(modifier=models.Modifier.IDF)},
        "hnsw_config": models.HnswConfigDiff(m=0, payload_m=16),
        "metadata": meta.as_payload(),
    }


PAYLOAD_INDEXES: tuple[tuple[str, models.PayloadSchemaType | models.KeywordIndexParams], ...] = (
    (TENANT, models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True)),
    (DOCUMENT, models.PayloadSchemaType.KEYWORD),
    (KIND, models.PayloadSchemaType.KEYWORD),
    (POSITION, models.PayloadSchemaType.INTEGER),
    (REVISION, models.PayloadSchemaType.INTEGER),
)


class QdrantIndex:
    """A :class:`services.knowledge.index.VectorIndex` on a Qdrant server."""

    def __init__(
        self,
        url: str,
        api_key: str = "",
        timeout_s: int = 10,
        client: AsyncQdrantClient | None = None,
    ) -> None:
        """Talk to the server at ``url`` (or through ``client``, for instance a local one)."""
        self._client = client or AsyncQdrantClient(
            url=url, api_key=api_key or None, timeout=timeout_s
        )
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
        replies = await self._client.query_batch_points(self._collection, query_requests(query))
        dense = [Candidate(str(p.id), float(p.score), p.payload or {}) for p in replies[0].points]
        if query.terms is None:
            return [Hit(c.id, c.score, c.payload) for c in dense]
        leads = [Candidate(str(p.id), p.score, p.payload or {})
                 for r in replies[2:] for p in r.points]  # fmt: skip
        return fuse(
            query,
            dense,
            bm25_candidates(query, replies[1].points, models.SparseVector, "the server"),
            leads,
        )

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
