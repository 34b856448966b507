"""Model tiers: OpenAI-compatible endpoints (streamed, priced from usage) or the embedded responder.

The embedded responder needs no network: it composes a grounded reply from the retrieved
passages (their leading sentences) or restates the workflow's instruction, whose facts come
from earlier tool results; it is priced with the same table as a configured tier, on a
word-based token estimate, so every run has tier, tokens and cost.

Free-text generations are published to the run's :class:`~services.orchestrator.stream.RunHub`
as token deltas while they are produced: a configured tier's streamed chunks as they arrive,
the embedded responder's reply in groups of a few words. JSON generations are not streamed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from openai import AsyncOpenAI
from pydantic import BaseModel

from services.orchestrator.stream import RunHub, halt_point
from services.orchestrator.workflow import (
    CallContext,
    Critique,
    CritiqueRequest,
    Generation,
    GenerationRequest,
    Tier,
)
from supportmesh.spec.v1 import message_pb2

_SENTENCES = re.compile(r"(?<=[.!?])\s+")
_INSTRUCTION = re.compile(r"^\s*(tell|thank|inform)\s+(the customer|[^ ]+)\s*(that\s+)?", re.I)
_WORDS = re.compile(r"\S+\s*")
WORDS_PER_DELTA = 3


class TierModel(BaseModel):
    """One tier's model: an OpenAI-compatible endpoint and its price per 1,000 tokens."""

    base_url: str = ""  # empty: the embedded responder
    model: str = "embedded"
    api_key: str = ""  # empty: ORCHESTRATOR_MODEL_API_KEY, or none for a keyless endpoint
    input_per_1k_usd: float = 0.0
    output_per_1k_usd: float = 0.0


DEFAULT_TIERS: dict[str, TierModel] = {
    "SLM_A": TierModel(input_per_1k_usd=0.0001, output_per_1k_usd=0.0002),
    "SLM_B": TierModel(input_per_1k_usd=0.0005, output_per_1k_usd=0.001),
    "LLM": TierModel(input_per_1k_usd=0.003, output_per_1k_usd=0.006),
}


@dataclass(frozen=True)
class Usage:
    """Tokens in and out of one call."""

    prompt: int
    completion: int

    def cost(self, model: TierModel) -> float:
        """What the call cost at ``model``'s prices."""
        return (
            self.prompt * model.input_per_1k_usd + self.completion * model.output_per_1k_usd
        ) / 1000


def estimate_tokens(text: str) -> int:
    """A word-based token estimate (about 4/3 tokens a word)."""
    return max(1, (len(text.split()) * 4 + 2) // 3)


def embedded_reply(request: GenerationRequest) -> str:
    """The embedded responder's grounded reply."""
    if request.json_output:
        company = "company" in request.prompt.lower() and "company ," not in request.prompt
        return json.dumps(
            {
                "qualified": company,
                "segment": "smb",
                "confidence": 0.85 if company else 0.5,
                "reason": "a company was named" if company else "no company named",
            }
        )
    if request.passages:
        best = max(request.passages, key=lambda passage: passage.score)
        return " ".join(_SENTENCES.split(best.text.strip())[:2])
    sentence = _INSTRUCTION.sub("", request.prompt.strip()).replace(" and that ", " and ")
    return sentence[:1].upper() + sentence[1:]


def word_groups(text: str) -> list[str]:
    """``text`` in pieces of two to four words that concatenate back to it exactly."""
    words = _WORDS.findall(text)
    if not words:
        return [text] if text else []
    words[0] = text[: len(text) - len(text.lstrip())] + words[0]
    groups = [words[i : i + WORDS_PER_DELTA] for i in range(0, len(words), WORDS_PER_DELTA)]
    if len(groups) > 1 and len(groups[-1]) == 1:
        last = groups.pop()
        groups[-1] += last
    return ["".join(group) for group in groups]


class Models:
    """The ModelPort: each tier served by its configured endpoint or the embedded responder."""

    def __init__(
        self, tiers: Mapping[str, TierModel] | None = None, *, hub: RunHub | None = None
    ) -> None:
        """Configure tiers (missing ones use :data:`DEFAULT_TIERS`); stream deltas to ``hub``."""
        self.tiers = {**DEFAULT_TIERS, **(tiers or {})}
        self._clients: dict[str, AsyncOpenAI] = {}
        self._hub = hub

    def _delta(self, call: CallContext, request: GenerationRequest, text: str) -> None:
        halt_point()
        if self._hub is not None and text and not request.json_output:
            self._hub.publish(call.run_id, message_pb2.TokenDelta(text=text))

    def _client(self, model: TierModel) -> AsyncOpenAI:
        client = self._clients.get(model.base_url)
        if client is None:
            # The client refuses an empty key; a keyless local endpoint ignores this one.
            key = model.api_key or "unused"
            client = AsyncOpenAI(base_url=model.base_url, api_key=key, max_retries=1)
            self._clients[model.base_url] = client
        return client

    async def generate(self, call: CallContext, request: GenerationRequest) -> Generation:
        """Answer at ``request.tier``."""
        halt_point()
        model = self.tiers[request.tier]
        if not model.base_url:
            text = embedded_reply(request)
            for piece in word_groups(text):
                self._delta(call, request, piece)
            prompt = request.prompt + " ".join(p.text for p in request.passages)
            usage = Usage(estimate_tokens(prompt), estimate_tokens(text))
        else:
            text, usage = await self._stream(call, model, request)
        return Generation(text, usage.prompt + usage.completion, usage.cost(model))

    async def _stream(
        self, call: CallContext, model: TierModel, request: GenerationRequest
    ) -> tuple[str, Usage]:
        context = "\n\n".join(f"[{p.id}] {p.text}" for p in request.passages)
        if request.tool_results:
            context += "\n\nTool results: " + json.dumps(dict(request.tool_results), default=str)
        messages = [
            {"role": "system", "content": request.system_prompt or "You are a support agent."},
            {"role": "user", "content": f"{context}\n\n{request.prompt}".strip()},
        ]
        stream = await self._client(model).chat.completions.create(  # type: ignore[call-overload]
            model=model.model,
            messages=messages,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            stream=True,
            stream_options={"include_usage": True},
            timeout=max(0.1, call.timeout_s()),
        )
        parts: list[str] = []
        usage: Usage | None = None
        try:
            async for chunk in stream:
                for choice in chunk.choices:
                    if choice.delta.content:
                        parts.append(choice.delta.content)
                        self._delta(call, request, choice.delta.content)
                if chunk.usage is not None:
                    usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
        finally:
            await stream.close()
        text = "".join(parts)
        # A provider that reports no usage is charged on the estimate.
        return text, usage or Usage(estimate_tokens(str(messages)), estimate_tokens(text))

    async def critique(self, call: CallContext, request: CritiqueRequest) -> Critique:
        """Score an answer: word overlap with the evidence (embedded) at the tier's price."""
        halt_point()
        model = self.tiers[request.tier]
        answer = set(re.findall(r"[a-z0-9]+", request.answer.lower()))
        evidence = set(re.findall(r"[a-z0-9]+", " ".join(request.evidence).lower()))
        score = len(answer & evidence) / len(answer) if answer else 0.0
        usage = Usage(estimate_tokens(request.answer + " ".join(request.evidence)), 8)
        return Critique(
            min(1.0, score + 0.1),
            "word overlap with the evidence",
            usage.prompt + usage.completion,
            usage.cost(model),
        )

    async def aclose(self) -> None:
        """Close the HTTP clients."""
        for client in self._clients.values():
            await client.close()


def tier_of(name: str) -> Tier:
    """A tier name as the engine's Tier literal."""
    if name not in DEFAULT_TIERS:
        raise ValueError(f"unknown tier {name}")
    return name  # type: ignore[return-value]
