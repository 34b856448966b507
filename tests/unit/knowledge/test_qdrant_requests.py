"""The Qdrant server adapter's requests, built without a server (none can be installed here)."""

from __future__ import annotations

from qdrant_client import models

from services.knowledge import qdrant_index
from services.knowledge.index import IndexMeta, Point, Query, Removal, collection_name
from services.knowledge.lexical import Terms


def test_a_query_always_filters_on_the_tenant_and_kind() -> None:
    query = Query("acme", [0.1, 0.2], "chunk", 5, {"locale": "en"}, 0.3)
    built = qdrant_index.query_filter(query)
    assert isinstance(built.must, list)
    assert built.must == [
        models.FieldCondition(key="tenant_id", match=models.MatchValue(value="acme")),
        models.FieldCondition(key="kind", match=models.MatchValue(value="chunk")),
        models.FieldCondition(key="labels.locale", match=models.MatchValue(value="en")),
    ]


def test_removals_target_one_document_and_revisions() -> None:
    older = qdrant_index.removal_filter(Removal("acme", "d1", below_revision=3))
    assert isinstance(older.must, list)
    assert older.must[:2] == [
        models.FieldCondition(key="tenant_id", match=models.MatchValue(value="acme")),
        models.FieldCondition(key="document_id", match=models.MatchValue(value="d1")),
    ]
    assert older.must[2] == models.FieldCondition(key="revision", range=models.Range(lt=3))
    one = qdrant_index.removal_filter(Removal("acme", "d1", revision=2))
    assert isinstance(one.must, list)
    assert one.must[2] == models.FieldCondition(key="revision", match=models.MatchValue(value=2))


def test_the_collection_follows_the_multitenancy_guide() -> None:
    meta = IndexMeta("sentence-transformers/all-MiniLM-L6-v2", 384, "g1")
    config = qdrant_index.collection_config(384, meta)
    assert config["vectors_config"] == {
        "dense": models.VectorParams(size=384, distance=models.Distance.COSINE)
    }
    assert config["sparse_vectors_config"] == {
        "terms": models.SparseVectorParams(modifier=models.Modifier.IDF)
    }
    assert config["hnsw_config"] == models.HnswConfigDiff(m=0, payload_m=16)
    assert config["metadata"] == {
        "model": "sentence-transformers/all-MiniLM-L6-v2", "dimension": 384, "generation": "g1",
    }  # fmt: skip
    tenant_field, tenant_schema = qdrant_index.PAYLOAD_INDEXES[0]
    assert tenant_field == "tenant_id"
    assert isinstance(tenant_schema, models.KeywordIndexParams)
    assert tenant_schema.is_tenant is True
    assert collection_name(meta.model, 384) == (
        "knowledge_sentence-transformers-all-minilm-l6-v2_384_hybrid-lead"
    )


def test_points_carry_their_payload_and_terms() -> None:
    terms = Terms((7, 9), (1.5, 0.5))
    plain, lexical = qdrant_index.point_structs([
        Point("0b7c6c55-3f4e-4a57-9a1d-1d2a3b4c5d6e", [1, 0], {"tenant_id": "acme"}),
        Point("1b7c6c55-3f4e-4a57-9a1d-1d2a3b4c5d6e", [0, 1], {"tenant_id": "acme"}, terms),
    ])  # fmt: skip
    assert plain.vector == {"dense": [1.0, 0.0]}
    assert plain.payload == {"tenant_id": "acme"}
    assert lexical.vector == {
        "dense": [0.0, 1.0], "terms": models.SparseVector(indices=[7, 9], values=[1.5, 0.5]),
    }  # fmt: skip


def test_a_hybrid_query_asks_dense_bm25_and_lead_rankings_inside_the_tenant() -> None:
    query = Query("acme", [0.1, 0.2], "chunk", 5, terms=Terms((3,), (1.0,)))
    dense, lexical, leads = qdrant_index.query_requests(query)
    assert dense.using == "dense"
    assert lexical.using == "terms"
    assert lexical.query == models.SparseVector(indices=[3], values=[1.0])
    assert dense.filter == lexical.filter == qdrant_index.query_filter(query)
    assert dense.limit == lexical.limit == query.candidates
    assert lexical.with_vector == ["dense", "terms"]  # cosine scores and shared terms
    assert (leads.using, leads.limit, leads.with_payload) == ("dense", 10, ["document_id"])
    assert leads.filter == qdrant_index.query_filter(query, leads=True)
    assert isinstance(leads.filter, models.Filter)
    assert isinstance(leads.filter.must, list)
    assert leads.filter.must[-1] == models.FieldCondition(
        key="position", match=models.MatchValue(value=0)
    )
    no_leads = Query("acme", [0.1, 0.2], "chunk", 5, terms=Terms((3,), (1.0,)), documents=0)
    assert len(qdrant_index.query_requests(no_leads)) == 2


def test_a_query_without_terms_is_dense_only() -> None:
    (dense,) = qdrant_index.query_requests(Query("acme", [0.1, 0.2], "faq", 3, min_score=0.8))
    assert (dense.using, dense.limit, dense.score_threshold) == ("dense", 3, 0.8)
