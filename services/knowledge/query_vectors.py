"""Query vectors for search: recent ones from memory, concurrent new ones encoded together.

Customers ask the same questions in the same words, so the last few thousand distinct
queries keep their vectors (an LRU). A query not seen recently joins a queue; one batch is
encoded at a time, and every query that arrives meanwhile goes into the next batch, so under
concurrency many queries share one forward pass instead of waiting for each other's, and
nobody waits for a timer. Identical queries in flight together are encoded once.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence

from services.knowledge.minilm import Vectors

Encode = Callable[[Sequence[str]], Awaitable[Vectors]]


def cache_key(query: str) -> str:
    """The query as encoded and remembered: whitespace runs collapsed."""
    return " ".join(query.split())


class QueryVectors:
    """Vectors of search queries (see the module docstring)."""

    def __init__(self, encode: Encode, size: int = 4096, max_batch: int = 32) -> None:
        """Encode with ``encode``; remember ``size`` queries; at most ``max_batch`` a pass."""
        self._encode = encode
        self._size = size
        self._max_batch = max_batch
        self._vectors: OrderedDict[str, Vectors] = OrderedDict()
        self._waiting: dict[str, asyncio.Future[Vectors]] = {}
        self._queue: list[str] = []
        self._drain: asyncio.Task[None] | None = None
        self.batches = 0

    def cached(self, query: str) -> Vectors | None:
        """The remembered vector of ``query``, if any."""
        key = cache_key(query)
        found = self._vectors.get(key)
        if found is not None:
            self._vectors.move_to_end(key)
        return found

    async def vector(self, query: str) -> Vectors:
        """The query's vector (one row)."""
        found = self.cached(query)
        if found is not None:
            return found
        key = cache_key(query)
        future = self._waiting.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._waiting[key] = future
            self._queue.append(key)
            if self._drain is None or self._drain.done():
                self._drain = asyncio.create_task(self._run())
        return await asyncio.shield(future)

    async def _run(self) -> None:
        while self._queue:
            keys, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            self.batches += 1
            try:
                vectors = await self._encode(keys)
            except Exception as error:  # noqa: BLE001 - every waiter of the batch gets it
                for key in keys:
                    future = self._waiting.pop(key)
                    if not future.done():
                        future.set_exception(error)
                continue
            for key, vector in zip(keys, vectors, strict=True):
                self._remember(key, vector)
                future = self._waiting.pop(key)
                if not future.done():
                    future.set_result(vector)

    def _remember(self, key: str, vector: Vectors) -> None:
        self._vectors[key] = vector
        self._vectors.move_to_end(key)
        while len(self._vectors) > self._size:
            self._vectors.popitem(last=False)
