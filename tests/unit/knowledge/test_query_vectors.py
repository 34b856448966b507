"""Query vectors: the LRU, single flight, and concurrent queries sharing one encoding pass."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest

from services.knowledge.minilm import Vectors
from services.knowledge.query_vectors import QueryVectors, cache_key


class Recorder:
    """An encoder that records its batches and can be held until released."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = False

    async def __call__(self, texts: Sequence[str]) -> Vectors:
        self.batches.append(list(texts))
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("encoder down")
        return np.array([[float(len(t)), 1.0] for t in texts], np.float32)


async def test_a_repeated_query_is_served_from_memory() -> None:
    encoder = Recorder()
    vectors = QueryVectors(encoder)
    first = await vectors.vector("where is my order")
    again = await vectors.vector("  where is   my order ")
    assert np.array_equal(first, again)
    assert encoder.batches == [["where is my order"]]


async def test_queries_arriving_during_a_pass_share_the_next_one() -> None:
    encoder = Recorder()
    vectors = QueryVectors(encoder)
    encoder.gate.clear()
    first = asyncio.create_task(vectors.vector("q0"))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(vectors.vector(f"query {n}")) for n in range(5)]
    same = asyncio.create_task(vectors.vector("query 1"))  # in flight already: not twice
    await asyncio.sleep(0)
    encoder.gate.set()
    found = await asyncio.gather(first, *rest, same)
    assert encoder.batches == [["q0"], [f"query {n}" for n in range(5)]]
    assert [float(v[0]) for v in found] == [2.0, *[7.0] * 5, 7.0]
    assert vectors.batches == 2


async def test_batches_are_capped() -> None:
    encoder = Recorder()
    vectors = QueryVectors(encoder, max_batch=2)
    await asyncio.gather(*(vectors.vector(f"q{n}") for n in range(5)))
    assert [len(b) for b in encoder.batches] == [2, 2, 1]


async def test_the_oldest_query_is_forgotten_first() -> None:
    encoder = Recorder()
    vectors = QueryVectors(encoder, size=2)
    for query in ("a", "b", "a", "c"):
        await vectors.vector(query)
    assert vectors.cached("a") is not None
    assert vectors.cached("c") is not None
    assert vectors.cached("b") is None


async def test_a_failed_pass_fails_its_waiters_and_the_next_query_retries() -> None:
    encoder = Recorder()
    vectors = QueryVectors(encoder)
    encoder.fail = True
    with pytest.raises(RuntimeError, match="encoder down"):
        await vectors.vector("q")
    encoder.fail = False
    assert float((await vectors.vector("q"))[0]) == 1.0
    assert len(encoder.batches) == 2


def test_the_cache_key_collapses_whitespace_only() -> None:
    assert cache_key(" Reset\tmy  Password ") == "Reset my Password"
