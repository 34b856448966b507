"""The condition language: what it evaluates, and what it refuses to parse."""

from __future__ import annotations

from typing import Any

import pytest

from services.orchestrator.workflow import ExpressionError, parse_expression
from services.orchestrator.workflow.templates import parse_template

SCOPE: dict[str, Any] = {
    "intent": "faq",
    "confidence": 0.65,
    "order": {"status": "shipped", "total": 42, "tags": ["gift"]},
    "input": {"name": "Ada", "email": None},
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("intent == 'faq'", True),
        ("confidence < 0.7 or intent == 'complaint'", True),
        ("confidence < 0.7 OR intent == 'complaint'", True),  # the seed's spelling
        ("NOT (confidence < 0.7) AND intent == 'faq'", False),
        ("order.status in ['shipped', 'delivered']", True),
        ("order.status not in ('shipped',)", False),
        ("0 < order.total <= 42", True),
        ("'gift' in order.tags", True),
        ("order.missing.deeper == null", True),
        ("input.email != None", False),
        ("order.status < 3", False),  # ordering across types is false, not an error
        ("missing > 1", False),
        ("intent == 'AND OR'", False),  # keywords inside strings are left alone
        ("-1 < confidence", True),
        ("true and not false", True),
    ],
)
def test_evaluates(source: str, expected: bool) -> None:
    assert parse_expression(source).test(SCOPE) is expected


def test_or_yields_the_deciding_operand() -> None:
    assert parse_expression("input.nickname or input.name").evaluate(SCOPE) == "Ada"
    assert parse_expression("input.email or 'none'").evaluate(SCOPE) == "none"


def test_names_are_the_roots_read() -> None:
    expression = parse_expression("order.status == 'x' and confidence > input.min")
    assert expression.names() == {"order", "confidence", "input"}


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("__import__('os').system('id')", "function calls"),
        ("import os", "syntax error"),
        ("order.__class__", "names starting with '_'"),
        ("order._private", "names starting with '_'"),
        ("__builtins__", "names starting with '_'"),
        ("().__class__.__bases__", "dotted names"),
        ("open('/etc/passwd')", "function calls"),
        ("order.status.upper()", "function calls"),
        ("order['status']", "indexing"),
        ("confidence * 2 > 1", "arithmetic"),
        ("lambda: 1", "lambdas"),
        ("[x for x in order]", "comprehensions"),
        ("(x := 1)", "assignment"),
        ("{'a': 1}", "dict literals"),
        ("1 if intent else 2", "conditional"),
        ("intent is None", "Is"),
        ("b'bytes' == intent", "literal"),
        ("intent ==", "syntax error"),
        ("", "empty"),
        ("x" * 1001, "longer than"),
        ("(" * 40 + "1" + ")" * 40 + " and " + "not " * 40 + "x", "nests deeper"),
    ],
)
def test_refuses_everything_outside_the_language(source: str, why: str) -> None:
    with pytest.raises(ExpressionError, match=why):
        parse_expression(source)


def test_templates_keep_types_and_interpolate_text() -> None:
    template = parse_template(
        {
            "id": "${order.total}",
            "tags": "${order.tags}",
            "text": "Order ${order.status}!",
            "literal": 3,
            "nested": ["${input.email}", "${input.name} x"],
        }
    )
    assert template.render(SCOPE) == {
        "id": 42,
        "tags": ["gift"],
        "text": "Order shipped!",
        "literal": 3,
        "nested": [None, "Ada x"],
    }
    assert template.names() == {"order", "input"}
