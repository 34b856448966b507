"""Generate data/router/dev.jsonl: labelled customer-support queries for the router.

Deterministic (fixed seed, no network): ``python data/router/generate.py`` rewrites the file
byte for byte. Each row records the attributes it was built from, and ``acceptable_tiers``
is computed from those attributes alone by :func:`acceptable_tiers` — the labelling rule a
reviewer audits (see README.md next to this file).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

SEED = 20_241_114
ROWS = 1600
OUT = Path(__file__).with_name("dev.jsonl")
INTENTS = ("faq", "order", "tracking", "lead", "payment")
TONE_WEIGHT = {"neutral": 0.0, "frustrated": 0.5, "angry": 1.0}


def acceptable_tiers(attrs: dict[str, Any]) -> list[str]:
    """The labelling rule: which tiers answer a query with these attributes acceptably."""
    # difficulty = reasoning_depth (0–2) + multi_intent + policy_nuance + tone weight
    # (frustrated 0.5, angry 1) + 0.5 when ambiguous.
    # SLM_A: difficulty ≤ 0.5 and no complex (nested or > 4 field) strict schema.
    # SLM_B: difficulty ≤ 1.5 and reasoning_depth < 2.
    # LLM:   difficulty ≤ 4 (beyond that no tier answers acceptably).
    difficulty = difficulty_of(attrs)
    tiers = []
    if difficulty <= 0.5 and not (attrs["strict_schema"] and attrs["schema_complex"]):
        tiers.append("SLM_A")
    if difficulty <= 1.5 and attrs["reasoning_depth"] < 2:
        tiers.append("SLM_B")
    if difficulty <= 4.0:
        tiers.append("LLM")
    return tiers


def difficulty_of(attrs: dict[str, Any]) -> float:
    """The difficulty score the rule thresholds."""
    return (
        attrs["reasoning_depth"]
        + int(attrs["multi_intent"])
        + int(attrs["policy_nuance"])
        + TONE_WEIGHT[attrs["emotional_tone"]]
        + (0.5 if attrs["ambiguous"] else 0.0)
    )


# Templates per intent and reasoning depth (0 lookup, 1 a few conditions, 2 multi-step
# reasoning, comparison or calculation). Several paraphrases each.
TEMPLATES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "faq": (
        (
            "What are your opening hours in {city}?",
            "Do you ship to {country}?",
            "How long does standard delivery take?",
            "Where can I download my invoices?",
            "Can I change my password in the app?",
            "What payment methods do you accept?",
            "Is there a phone number for support?",
            "Do you have a store in {city}?",
            "what's the return window?",
            "Do you gift wrap?",
        ),
        (
            "If I bought {product} online, can I return it in the {city} store instead?",
            "If I change my delivery address after ordering, does the delivery date move?",
            "What happens to my loyalty points when I return {product}?",
            "Can I use two discount codes on one order, and if not which one applies?",
            "Does the price match apply if {product} drops in price a week after I buy it?",
        ),
        (
            "Explain the difference between the {plan_a} and {plan_b} plans for a team of {n} "
            "and which works out cheaper per year.",
            "Why would a warranty claim for {product} go to the manufacturer rather than you, "
            "and how does that change the timeline?",
            "Compare standard, express and click-and-collect for {n} items to {country}: which "
            "is fastest and which is cheapest overall?",
        ),
    ),
    "order": (
        (
            "Cancel order {order_id}.",
            "I want to order {n} {product}.",
            "Add {product} to order {order_id}.",
            "What did I buy in order {order_id}?",
            "Change the size on order {order_id} to {size}.",
            "please cancel {order_id}",
        ),
        (
            "I ordered {product} twice by mistake ({order_id} and {order_id2}); cancel one and "
            "keep the one with express shipping.",
            "Can I swap {product} in order {order_id} for another colour without losing my "
            "discount?",
            "Split order {order_id} so the {product} ships now and the rest when in stock.",
        ),
        (
            "Order {order_id} arrived with the {product} missing and an extra item I didn't buy; "
            "work out what I owe or what you owe me, given I paid with a gift card and a promo "
            "code.",
            "I want to merge orders {order_id} and {order_id2} into one shipment but one has a "
            "pre-order item; what's the best way and how does it change shipping costs?",
        ),
    ),
    "tracking": (
        (
            "Where is my order {order_id}?",
            "Track parcel {tracking}.",
            "Has order {order_id} shipped yet?",
            "When will {tracking} be delivered?",
            "where's my package {tracking}",
            "Is {order_id} out for delivery?",
        ),
        (
            "Tracking for {tracking} says delivered but I wasn't home; where would the courier "
            "have left it?",
            "Parcel {tracking} has been stuck in {city} for {days} days, is it lost?",
            "Order {order_id} shows two parcels but only one arrived; where is the other?",
        ),
        (
            "Parcel {tracking} went back to the sender after a failed customs check in {country}; "
            "figure out whether it was the duties, the address or the product and what I must do "
            "to get it re-sent.",
            "{tracking} and {order_id} both show delays of {days} days; which courier hub is the "
            "bottleneck and would rerouting through click-and-collect be faster?",
        ),
    ),
    "lead": (
        (
            "I'd like a demo.",
            "Can someone from sales contact me?",
            "How much is the {plan_a} plan?",
            "Do you offer a free trial?",
            "send me pricing",
            "Do you have an enterprise plan?",
        ),
        (
            "We're {n} agents on {competitor}; can you quote the {plan_b} plan with SSO?",
            "Is there a nonprofit discount on the {plan_a} plan if we pay yearly?",
            "Can the trial be extended to {days} days for our pilot?",
        ),
        (
            "We handle {volume} tickets a month across {n} brands in three languages; recommend a "
            "plan, estimate the yearly cost and explain how migrating from {competitor} works.",
            "Compare your {plan_b} plan with {competitor}'s for {n} seats including overage "
            "fees, and tell me which is better value over two years.",
        ),
    ),
    "payment": (
        (
            "Send me the invoice for order {order_id}.",
            "Update the card on file.",
            "What's my current balance?",
            "Was my payment for {order_id} received?",
            "Can I pay by bank transfer?",
        ),
        (
            "I was charged {amount} for order {order_id} but the total said {amount2}; why?",
            "Can I pay the rest of order {order_id} by card after using a gift card?",
            "My refund for {order_id} hasn't arrived after {days} days; when will it?",
        ),
        (
            "I was charged twice for {order_id}, one charge was partly refunded and my bank shows "
            "a pending reversal; work out how much I'm still owed.",
            "Explain how proration works if I upgrade from {plan_a} to {plan_b} mid-cycle and "
            "downgrade again next month, and what each invoice will show.",
        ),
    ),
}

SLOTS: dict[str, tuple[str, ...]] = {
    "city": ("Berlin", "Lyon", "Austin", "Leeds", "Porto", "Osaka", "Denver"),
    "country": ("Canada", "Norway", "Brazil", "Japan", "Ireland", "Mexico"),
    "product": ("running shoes", "the blender", "a desk lamp", "wireless earbuds",
                "the winter jacket", "a yoga mat", "the coffee grinder"),
    "size": ("M", "L", "42", "XS"),
    "plan_a": ("Starter", "Basic", "Team"),
    "plan_b": ("Pro", "Business", "Enterprise"),
    "competitor": ("Zendesk", "Freshdesk", "Intercom", "Help Scout"),
    "n": ("3", "5", "12", "40", "150"),
    "days": ("6", "9", "14", "21", "45"),
    "volume": ("8,000", "25,000", "120,000"),
    "amount": ("$84.20", "$129.99", "€56.00", "$12.50"),
    "amount2": ("$74.20", "$119.99", "€49.00", "$10.00"),
}  # fmt: skip

VAGUE = ("my order", "it", "the thing from last week", "that parcel", "my stuff")
NUANCE = (
    "even though it's been {days} days since delivery, past the 30-day window",
    "and the item was bought on final sale",
    "but it was a gift and I don't have the receipt",
    "and I'm in the EU, so consumer law may give me extra rights here",
    "though my account is a business account on net-30 terms",
    "although the promo code said it was non-refundable",
)
OPENERS = {
    "frustrated": ("I've already asked about this twice.", "Still waiting on an answer here.",
                   "Third time writing about this.", "Honestly getting tired of this."),
    "angry": ("This is unacceptable!", "Worst service I've ever had.", "I'm furious.",
              "If this isn't fixed today I'm disputing the charge.", "ARE YOU KIDDING ME???",
              "You people are a scam."),
}  # fmt: skip
SECOND = ("Also, ", "And while I have you, ", "Separately, ", "Plus ")
TENANT_MIX = {  # tenant → intent weights, so tenants differ like real ones do
    "t-books": (5, 2, 2, 1, 1), "t-fashion": (2, 4, 4, 1, 2), "t-saas": (3, 1, 1, 4, 3),
    "t-grocery": (2, 3, 5, 1, 2), "t-travel": (3, 2, 1, 2, 4), "t-electro": (2, 3, 3, 2, 3),
}  # fmt: skip


def _fill(template: str, rng: random.Random, vague: bool) -> str:
    values = {key: rng.choice(options) for key, options in SLOTS.items()}
    values["order_id"] = f"#{rng.randint(10_000, 99_999)}"
    values["order_id2"] = f"#{rng.randint(10_000, 99_999)}"
    values["tracking"] = f"1Z{rng.randint(10**7, 10**8 - 1)}"
    if vague:
        for key in ("order_id", "order_id2", "tracking", "product"):
            values[key] = rng.choice(VAGUE)
    return template.format(**values)


def _schema(rng: random.Random, complex_: bool) -> dict[str, Any]:
    names = ["status", "eta", "order_id", "amount", "currency", "reason", "items", "carrier",
             "next_step", "contact"]  # fmt: skip
    fields = names[: rng.randint(6, 10)] if complex_ else names[: rng.randint(2, 4)]
    props: dict[str, Any] = {name: {"type": "string"} for name in fields}
    if complex_:
        props["items"] = {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
                "required": ["sku", "qty"],
            },
        }
    return {"type": "object", "properties": props, "required": fields,
            "additionalProperties": False}  # fmt: skip


def _typo(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    candidates = [i for i, word in enumerate(words) if len(word) > 4 and word.isalpha()]
    if not candidates:
        return text
    i = rng.choice(candidates)
    j = rng.randrange(len(words[i]) - 1)
    word = words[i]
    words[i] = word[:j] + word[j + 1] + word[j] + word[j + 2 :]
    return " ".join(words)


def _noise(text: str, rng: random.Random) -> str:
    if rng.random() < 0.15:
        text = _typo(text, rng)
    if rng.random() < 0.1:
        text = rng.choice(("hi, ", "hello there, ", "hey ", "Good morning! ")) + text
    if rng.random() < 0.08:
        text += rng.choice((" thx", " pls", " 🙏", " asap"))
    if rng.random() < 0.25:
        text = text.lower()
    if rng.random() < 0.15:
        text = text.rstrip(".?!")
    return text


def make_row(index: int, rng: random.Random) -> dict[str, Any]:
    """One labelled row; attributes first, then the text that realizes them."""
    tenant = rng.choice(sorted(TENANT_MIX))
    intent = rng.choices(INTENTS, weights=TENANT_MIX[tenant])[0]
    attrs: dict[str, Any] = {
        "reasoning_depth": rng.choices((0, 1, 2), weights=(58, 29, 13))[0],
        "multi_intent": rng.random() < 0.12,
        "policy_nuance": rng.random() < 0.1,
        "emotional_tone": rng.choices(("neutral", "frustrated", "angry"), (80, 12, 8))[0],
        "ambiguous": rng.random() < 0.1,
        "strict_schema": intent != "faq" and rng.random() < 0.2,
    }
    attrs["schema_complex"] = attrs["strict_schema"] and rng.random() < 0.4
    secondary = rng.choice([i for i in INTENTS if i != intent]) if attrs["multi_intent"] else None
    attrs["secondary_intent"] = secondary
    parts = []
    if attrs["emotional_tone"] != "neutral":
        parts.append(rng.choice(OPENERS[attrs["emotional_tone"]]))
    main = _fill(rng.choice(TEMPLATES[intent][attrs["reasoning_depth"]]), rng, attrs["ambiguous"])
    if attrs["policy_nuance"]:
        main = main.rstrip(".?!") + ", " + _fill(rng.choice(NUANCE), rng, False) + "?"
    parts.append(main)
    if secondary is not None:
        second = _fill(rng.choice(TEMPLATES[secondary][0]), rng, attrs["ambiguous"])
        parts.append(rng.choice(SECOND) + second[0].lower() + second[1:])
    context: dict[str, Any] = {"channel": rng.choice(("chat", "email", "whatsapp", "web"))}
    if attrs["strict_schema"]:
        context["json_schema"] = _schema(rng, attrs["schema_complex"])
        if rng.random() < 0.5:
            parts.append("Answer as JSON.")
    return {
        "id": f"q-{index:05d}",
        "tenant": tenant,
        "intent": intent,
        "query": _noise(" ".join(parts), rng),
        "context": context,
        "attributes": attrs,
        "difficulty": difficulty_of(attrs),
        "acceptable_tiers": acceptable_tiers(attrs),
    }


def generate(rows: int = ROWS, seed: int = SEED) -> list[dict[str, Any]]:
    """All rows, in a fixed order for a fixed seed."""
    rng = random.Random(seed)  # noqa: S311 - reproducible data, not secrets
    return [make_row(index, rng) for index in range(rows)]


def dumps(rows: list[dict[str, Any]]) -> str:
    """The JSONL text of rows, one compact object per line."""
    return "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows)


def main() -> None:
    """Write the data set (or another size/seed with the flags)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.write_text(dumps(generate(args.rows, args.seed)), encoding="utf-8")
    print(f"wrote {args.rows} rows to {args.out}")


if __name__ == "__main__":
    main()
