"""The OpenAI-compatible model path against a fake provider on a real socket (SSE streaming)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from services.orchestrator.models import Models, TierModel, embedded_reply
from services.orchestrator.stream import RunHub
from services.orchestrator.workflow import CallContext, GenerationRequest, Passage
from supportmesh.spec.v1.message_pb2 import TokenDelta


def _chunk(content: str | None, usage: dict[str, int] | None = None) -> bytes:
    choices = [] if content is None else [{"index": 0, "delta": {"content": content}}]
    body: dict[str, Any] = {
        "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "fake",
        "choices": choices, "usage": usage,
    }  # fmt: skip
    return f"data: {json.dumps(body)}\n\n".encode()


@pytest.fixture
async def provider() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    async def complete(request: web.Request) -> web.StreamResponse:
        seen.append(await request.json())
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for part in ("Returns are ", "free within ", "30 days."):
            await response.write(_chunk(part))
        await response.write(_chunk(None, {"prompt_tokens": 1000, "completion_tokens": 500,
                                           "total_tokens": 1500}))  # fmt: skip
        await response.write(b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", complete)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/v1", seen
    finally:
        await runner.cleanup()


def _request(**more: Any) -> GenerationRequest:
    fields: dict[str, Any] = {
        "tier": "SLM_A", "prompt": "How long do I have to return?", "system_prompt": "Be brief.",
        "passages": (Passage("p1", "Items can be returned within 30 days.", 0.9),),
        "tool_results": {}, "max_tokens": 100, "temperature": 0.2, "json_output": False,
    }  # fmt: skip
    fields.update(more)
    return GenerationRequest(**fields)


CALL = CallContext("t", "r", "u", "faq", "answer", time.monotonic() + 10)


async def test_a_configured_tier_streams_and_is_priced_from_the_providers_usage(
    provider: tuple[str, list[dict[str, Any]]],
) -> None:
    url, seen = provider
    tier = TierModel(base_url=url, model="fake-small", input_per_1k_usd=0.5,
                     output_per_1k_usd=1.5)  # fmt: skip
    models = Models({"SLM_A": tier})
    try:
        generation = await models.generate(CALL, _request())
    finally:
        await models.aclose()
    assert generation.text == "Returns are free within 30 days."
    assert generation.tokens == 1500
    assert generation.cost_usd == pytest.approx(0.5 + 0.75)
    assert seen[0]["stream"] is True
    assert seen[0]["model"] == "fake-small"
    assert "Items can be returned within 30 days." in seen[0]["messages"][1]["content"]


async def test_the_embedded_responder_grounds_on_passages_and_restates_instructions() -> None:
    assert embedded_reply(_request()) == "Items can be returned within 30 days."
    told = embedded_reply(_request(passages=(), prompt="Tell the customer that order 7 shipped."))
    assert told == "Order 7 shipped."
    generation = await Models().generate(CALL, _request())
    assert generation.tokens > 0
    assert generation.cost_usd > 0


async def test_a_configured_tier_forwards_its_streamed_chunks_as_token_deltas(
    provider: tuple[str, list[dict[str, Any]]],
) -> None:
    hub = RunHub()
    hub.open(CALL.run_id)
    reader = hub.subscribe(CALL.run_id)
    assert reader is not None
    models = Models({"SLM_A": TierModel(base_url=provider[0], model="fake")}, hub=hub)
    try:
        generation = await models.generate(CALL, _request())
    finally:
        await models.aclose()
    hub.finish(CALL.run_id)
    pieces = [event.text async for event in reader if isinstance(event, TokenDelta)]
    assert pieces == ["Returns are ", "free within ", "30 days."]
    assert "".join(pieces) == generation.text
