"""In-memory doubles of the workflow ports and a tool registry mirroring the real one."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.orchestrator.workflow import (
    CallContext,
    Critique,
    CritiqueRequest,
    Generation,
    GenerationRequest,
    HumanRequest,
    Passage,
    Ports,
    RouteDecision,
    Tier,
    ToolEvent,
)
from supportmesh.spec.v1 import tool_pb2

RO, COMP, IRR = (
    tool_pb2.SIDE_EFFECT_READ_ONLY,
    tool_pb2.SIDE_EFFECT_COMPENSATABLE,
    tool_pb2.SIDE_EFFECT_IRREVERSIBLE,
)


def spec(name: str, side_effect: int, compensation: str = "") -> tool_pb2.ToolSpec:
    """A ToolSpec with what the loader reads."""
    return tool_pb2.ToolSpec(
        name=name,
        version="1.0.0",
        side_effect=side_effect,  # type: ignore[arg-type]
        compensation_tool=compensation,
    )


# Side effects and compensations as the tools package registers them.
TOOL_SPECS: dict[str, tool_pb2.ToolSpec] = {
    s.name: s
    for s in (
        spec("orders.create", COMP, "orders.cancel"),
        spec("orders.get", RO),
        spec("orders.cancel", IRR),
        spec("payment.charge", COMP, "payment.refund"),
        spec("payment.capture", COMP, "payment.refund"),
        spec("payment.refund", IRR),
        spec("crm.create_lead", COMP, "crm.revert_lead_status"),
        spec("crm.update_lead_status", COMP, "crm.revert_lead_status"),
        spec("crm.revert_lead_status", IRR),
        spec("mail.send", IRR, "mail.send_cancellation"),
        spec("mail.send_cancellation", IRR),
        spec("knowledge.search", RO),
    )
}

ORDER_ID = "0b0f9c4e-5d1a-4c1e-9a39-8f2f5c8f1a01"


@dataclass
class FakeRouter:
    """Always decides the same thing."""

    decision: RouteDecision = field(
        default_factory=lambda: RouteDecision("SLM_A", ("SLM_B", "LLM"), 0.9, "faq", "dec-1")
    )
    queries: list[str] = field(default_factory=list)

    async def decide(
        self, call: CallContext, query: str, context: Mapping[str, Any], preference: str
    ) -> RouteDecision:
        self.queries.append(query)
        return self.decision


Handler = Callable[[Mapping[str, Any]], dict[str, Any]]


def _default_handlers() -> dict[str, Handler]:
    def order(args: Mapping[str, Any]) -> dict[str, Any]:
        items = args.get("items", [])
        total = sum(i["quantity"] * i["unit_price_cents"] for i in items)
        return {
            "order_id": ORDER_ID,
            "customer_id": args.get("customer_id"),
            "items": items,
            "total_cents": total,
            "currency": args.get("currency"),
            "status": "CREATED",
        }

    def charge(args: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "charge_id": "ch_1",
            "status": "succeeded",
            "amount_cents": args["amount_cents"],
            "currency": args["currency"],
            "captured": args.get("capture", True),
            "refunded": False,
        }

    def lead(args: Mapping[str, Any]) -> dict[str, Any]:
        status = str(args.get("status", "new"))
        return {"lead_id": "lead_1", "status": status, "previous_status": "", "change_id": "c1"}

    def mail(args: Mapping[str, Any]) -> dict[str, Any]:
        return {"message_id": "<m1@test>", "to": args["to"], "subject": args.get("subject", "")}

    return {
        "orders.create": order,
        "orders.get": lambda a: {
            "order_id": a["order_id"],
            "status": "SHIPPED",
            "carrier": "DHL",
            "eta": "2026-12-01",
        },
        "orders.cancel": lambda a: {"order_id": a["order_id"], "status": "CANCELLED"},
        "payment.charge": charge,
        "payment.capture": lambda a: {
            "charge_id": a["charge_id"],
            "status": "succeeded",
            "captured": True,
        },
        "payment.refund": lambda a: {
            "charge_id": a["charge_id"],
            "refund_id": "re_1",
            "refunded": True,
        },
        "crm.create_lead": lead,
        "crm.update_lead_status": lead,
        "crm.revert_lead_status": lambda a: {"lead_id": a["lead_id"], "status": "archived"},
        "mail.send": mail,
        "mail.send_cancellation": mail,
    }


@dataclass
class Call:
    """One recorded tool call."""

    tool: str
    arguments: dict[str, Any]
    key: str
    step_id: str


class FakeTools:
    """Tools that answer from handlers, fail or stall on request, and dedupe by key."""

    def __init__(self) -> None:
        self.handlers = _default_handlers()
        self.calls: list[Call] = []
        self.events: list[ToolEvent] = []
        self.failures: dict[str, list[BaseException]] = {}
        self.delays: dict[str, float] = {}
        self._applied: dict[str, dict[str, Any]] = {}

    def fail(self, tool: str, *errors: BaseException) -> None:
        """Make the next calls of ``tool`` raise ``errors`` in turn (the last one repeats)."""
        self.failures[tool] = list(errors)

    def names(self) -> list[str]:
        """Every tool called, in order."""
        return [call.tool for call in self.calls]

    async def call(
        self, call: CallContext, tool: str, arguments: Mapping[str, Any], idempotency_key: str
    ) -> Mapping[str, Any]:
        self.calls.append(Call(tool, dict(arguments), idempotency_key, call.step_id))
        if tool in self.delays:
            await asyncio.sleep(self.delays[tool])
        queue = self.failures.get(tool)
        if queue:
            error = queue.pop(0) if len(queue) > 1 else queue[0]
            raise error
        if idempotency_key in self._applied:
            return self._applied[idempotency_key]
        result = self.handlers[tool](arguments)
        self._applied[idempotency_key] = result
        return result

    async def record(self, call: CallContext, event: ToolEvent) -> None:
        self.events.append(event)


Reply = str | Callable[[GenerationRequest], str]


class FakeModels:
    """Model tiers with fixed replies, token counts and prices."""

    def __init__(
        self,
        replies: Mapping[Tier, Reply] | None = None,
        *,
        tokens: int = 120,
        prices: Mapping[Tier, float] | None = None,
        critic: Mapping[Tier, float] | None = None,
        scores: Mapping[Tier, float | None] | None = None,
    ) -> None:
        self.replies: dict[Tier, Reply] = dict(replies or {})
        self.tokens = tokens
        default_prices: dict[Tier, float] = {"SLM_A": 0.0005, "SLM_B": 0.002, "LLM": 0.02}
        default_critic: dict[Tier, float] = {"SLM_A": 0.9, "SLM_B": 0.9, "LLM": 0.95}
        self.prices: dict[Tier, float] = dict(prices or default_prices)
        self.critic: dict[Tier, float] = dict(critic or default_critic)
        self.scores: dict[Tier, float | None] = dict(scores or {})
        self.requests: list[GenerationRequest] = []
        self.critiques: list[CritiqueRequest] = []
        self.delay = 0.0

    def tiers(self) -> list[str]:
        """The tier of every generation, in order."""
        return [request.tier for request in self.requests]

    async def generate(self, call: CallContext, request: GenerationRequest) -> Generation:
        self.requests.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        reply = self.replies.get(request.tier, "I do not know.")
        text = reply(request) if callable(reply) else reply
        price = self.prices[request.tier]
        return Generation(text, self.tokens, price, self.scores.get(request.tier))

    async def critique(self, call: CallContext, request: CritiqueRequest) -> Critique:
        self.critiques.append(request)
        return Critique(self.critic[request.tier], "checked", 40, 0.0004)


@dataclass
class FakeKnowledge:
    """A fixed set of passages."""

    passages: Sequence[Passage] = ()
    queries: list[str] = field(default_factory=list)

    async def search(
        self, call: CallContext, query: str, top_k: int, min_score: float
    ) -> Sequence[Passage]:
        self.queries.append(query)
        return [p for p in self.passages if p.score >= min_score][:top_k]


@dataclass
class FakeHuman:
    """A support queue that records hand-offs."""

    handoffs: list[tuple[HumanRequest, str]] = field(default_factory=list)
    _tickets: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def hand_off(self, call: CallContext, request: HumanRequest, idempotency_key: str) -> str:
        self.handoffs.append((request, idempotency_key))
        return f"ticket-{next(self._tickets)}"


@dataclass
class Doubles:
    """Every double, and the ports made of them."""

    router: FakeRouter = field(default_factory=FakeRouter)
    tools: FakeTools = field(default_factory=FakeTools)
    models: FakeModels = field(default_factory=FakeModels)
    knowledge: FakeKnowledge = field(default_factory=FakeKnowledge)
    human: FakeHuman = field(default_factory=FakeHuman)

    @property
    def ports(self) -> Ports:
        return Ports(self.router, self.tools, self.models, self.knowledge, self.human)


async def no_sleep(seconds: float) -> None:
    """Backoff without waiting."""
    await asyncio.sleep(0)
