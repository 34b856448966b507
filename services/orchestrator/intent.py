"""Which workflow answers a chat message: the context's explicit intent, else a keyword classifier.

The router decides tiers, not workflows, so the orchestrator classifies the message itself:
an ``intent`` in the request context wins; otherwise structured context (items, an order id,
an amount) and then keywords pick one of the five workflows, FAQ being the default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

WORKFLOWS = ("faq", "order", "tracking", "lead", "payment")
_KEYWORDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("tracking", re.compile(r"\b(track|tracking|where is|shipped|delivery|arrive)\b", re.I)),
    ("order", re.compile(r"\b(buy|purchase|place an order|order (?:some|a|an|two|\d+))\b", re.I)),
    ("payment", re.compile(r"\b(pay|payment|invoice|bill)\b", re.I)),
    ("lead", re.compile(r"\b(demo|pricing|quote|sales|interested in|enterprise plan)\b", re.I)),
)


def classify(message: str, context: Mapping[str, Any]) -> str:
    """The workflow for ``message`` given its request context."""
    explicit = str(context.get("intent", "") or context.get("workflow", "")).lower()
    if explicit in WORKFLOWS:
        return explicit
    if context.get("items"):
        return "order"
    if context.get("amount_cents"):
        return "payment"
    for workflow, pattern in _KEYWORDS:
        if pattern.search(message):
            if workflow == "tracking" and not context.get("order_id"):
                continue
            return workflow
    if context.get("order_id"):
        return "tracking"
    return "faq"


def workflow_input(message: str, user_id: str, context: Mapping[str, Any]) -> dict[str, Any]:
    """The workflow input of a chat message: its context, the query and the customer."""
    given = {key: value for key, value in context.items() if key not in ("intent", "workflow")}
    given.setdefault("customer_id", user_id)
    given["query"] = message
    given["context"] = dict(context)
    return given
