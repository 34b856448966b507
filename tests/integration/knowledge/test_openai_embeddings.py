"""The OpenAI-compatible embedder against a local fake provider over a real HTTP socket."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np
import pytest
from aiohttp import web

from services.kit import errors
from services.kit.settings import InfraSettings
from services.knowledge.app import KnowledgeSettings, make_embedder
from services.knowledge.embeddings import OpenAIEmbedder

DIMENSION = 8


def _vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [float(b) - 100.0 for b in digest[:DIMENSION]]


@dataclass
class Provider:
    """A third-party embeddings provider speaking the OpenAI wire format."""

    url: str
    requests: list[dict[str, object]] = field(default_factory=list)
    fail: bool = False


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    state = Provider("")

    async def embeddings(request: web.Request) -> web.Response:
        body = await request.json()
        state.requests.append({"body": body, "auth": request.headers.get("Authorization")})
        if state.fail:
            return web.json_response({"error": {"message": "overloaded"}}, status=400)
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(text)}
            for i, text in reversed(list(enumerate(body["input"])))
        ]
        usage = {"prompt_tokens": 1, "total_tokens": 1}
        reply = {"object": "list", "data": data, "model": body["model"], "usage": usage}
        return web.Response(text=json.dumps(reply), content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/embeddings", embeddings)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"http://127.0.0.1:{port}/v1"
    try:
        yield state
    finally:
        await runner.cleanup()


async def test_vectors_come_back_in_order_and_normalised(provider: Provider) -> None:
    embedder = OpenAIEmbedder(provider.url, "embed-small", DIMENSION, api_key="sk-test")
    try:
        texts = [f"text {i}" for i in range(5)]
        vectors = await embedder.embed(texts)
    finally:
        await embedder.aclose()
    assert vectors.shape == (5, DIMENSION)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    expected = np.asarray(_vector("text 3"), dtype=np.float32)
    assert np.allclose(vectors[3], expected / np.linalg.norm(expected), atol=1e-6)
    (call,) = provider.requests
    assert call["auth"] == "Bearer sk-test"
    body = call["body"]
    assert isinstance(body, dict)
    assert (body["model"], body["input"]) == ("embed-small", texts)


async def test_batches_are_split(provider: Provider) -> None:
    embedder = OpenAIEmbedder(provider.url, "embed-small", DIMENSION, batch_size=2)
    try:
        assert (await embedder.embed(["a", "b", "c"])).shape == (3, DIMENSION)
    finally:
        await embedder.aclose()
    assert len(provider.requests) == 2


async def test_provider_errors_are_unavailable(provider: Provider) -> None:
    provider.fail = True
    embedder = OpenAIEmbedder(provider.url, "embed-small", DIMENSION)
    try:
        with pytest.raises(errors.Unavailable):
            await embedder.embed(["a"])
    finally:
        await embedder.aclose()


async def test_a_wrong_dimension_is_refused(provider: Provider) -> None:
    embedder = OpenAIEmbedder(provider.url, "embed-small", DIMENSION + 1)
    try:
        with pytest.raises(errors.Internal):
            await embedder.embed(["a"])
    finally:
        await embedder.aclose()


def test_settings_select_the_endpoint(provider: Provider) -> None:
    settings = KnowledgeSettings(
        embeddings_base_url=provider.url,
        embeddings_model="embed-small",
        embeddings_dimension=DIMENSION,
        infra=InfraSettings(),
    )
    embedder = make_embedder(settings)
    assert isinstance(embedder, OpenAIEmbedder)
    assert (embedder.model, embedder.dimension) == ("embed-small", DIMENSION)
