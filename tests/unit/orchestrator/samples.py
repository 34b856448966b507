"""Sample inputs and grounded replies for the five workflows."""

from __future__ import annotations

from typing import Any

from tests.unit.orchestrator.doubles import ORDER_ID

ORDER: dict[str, Any] = {
    "query": "I'd like two mugs, please.",
    "customer_id": "cus_1",
    "email": "ada@example.com",
    "currency": "EUR",
    "payment_method": "pm_card_visa",
    "items": [{"sku": "MUG", "quantity": 2, "unit_price_cents": 1250}],
}
ORDER_ANSWER = (
    f"Your order {ORDER_ID} is placed and paid. A confirmation email was sent to ada@example.com."
)

PAY: dict[str, Any] = {
    "query": "Pay my invoice",
    "customer_id": "cus_1",
    "email": "ada@example.com",
    "amount_cents": 4200,
    "currency": "EUR",
    "payment_method": "pm_card_visa",
}
PAY_ANSWER = "Your payment of 4200 cents (EUR) went through, reference ch_1. A receipt was emailed."

ASK: dict[str, Any] = {
    "query": "Where is my order?",
    "order_id": ORDER_ID,
    "email": "ada@example.com",
}
SHIPPED = f"Your order {ORDER_ID} has shipped with DHL and should arrive on 2026-12-01."

LEAD: dict[str, Any] = {
    "query": "We need support for 200 agents.",
    "email": "grace@example.com",
    "name": "Grace",
    "company": "Navy",
}
LEAD_REPLY = "Thank you, Grace! A follow-up email is on its way to grace@example.com."
