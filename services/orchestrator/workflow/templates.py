"""JSON values whose strings embed ``${expression}``: tool inputs, prompts and run outputs.

A string that is exactly ``${expr}`` renders to the expression's value with its type kept
(a list stays a list); text around or between placeholders renders as a string, with
``null`` as empty text. Expressions use the safe language of :mod:`.expressions`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.orchestrator.workflow.expressions import (
    Expression,
    ExpressionError,
    parse_expression,
)
from services.orchestrator.workflow.source import pointer

_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")


class TemplateError(ValueError):
    """A placeholder that does not parse; ``path`` is the JSON pointer inside the template."""

    def __init__(self, path: str, message: str) -> None:
        """Keep where inside the template the problem is."""
        super().__init__(message)
        self.path = path


@dataclass(frozen=True)
class Text:
    """A string with placeholders between literal parts."""

    parts: tuple[str | Expression, ...]


@dataclass(frozen=True)
class Value:
    """A string that is exactly one placeholder: renders to the value, type kept."""

    expression: Expression


@dataclass(frozen=True)
class Literal:
    """A JSON scalar with no placeholder."""

    value: str | int | float | bool | None


@dataclass(frozen=True)
class Array:
    """A list of templates."""

    items: tuple[Node, ...]


@dataclass(frozen=True)
class Object:
    """A mapping of keys to templates, in source order."""

    fields: tuple[tuple[str, Node], ...]


Node = Text | Value | Literal | Array | Object


@dataclass(frozen=True)
class Template:
    """A parsed template."""

    root: Node

    def render(self, scope: Mapping[str, Any]) -> Any:
        """The JSON value with every placeholder replaced from ``scope``."""
        return _render(self.root, scope)

    def names(self) -> frozenset[str]:
        """The root names the placeholders read."""
        return frozenset(name for expr in _expressions(self.root) for name in expr.names())

    def expressions(self) -> tuple[Expression, ...]:
        """Every placeholder's expression, in source order."""
        return tuple(_expressions(self.root))


def parse_template(value: Any) -> Template:
    """Parse a JSON value into a template, or raise :class:`TemplateError`."""
    return Template(_parse(value, ()))


def _parse(value: Any, at: tuple[str | int, ...]) -> Node:
    if isinstance(value, str):
        return _parse_text(value, at)
    if isinstance(value, list):
        return Array(tuple(_parse(item, (*at, index)) for index, item in enumerate(value)))
    if isinstance(value, dict):
        return Object(tuple((str(k), _parse(v, (*at, str(k)))) for k, v in value.items()))
    if isinstance(value, int | float | bool) or value is None:
        return Literal(value)
    raise TemplateError(pointer(at), f"{type(value).__name__} values are not JSON")


def _parse_text(text: str, at: tuple[str | int, ...]) -> Node:
    pieces: list[str | Expression] = []
    cursor = 0
    for match in _PLACEHOLDER.finditer(text):
        if match.start() > cursor:
            pieces.append(text[cursor : match.start()])
        try:
            pieces.append(parse_expression(match.group(1)))
        except ExpressionError as error:
            raise TemplateError(pointer(at), f"in '{match.group(0)}': {error}") from None
        cursor = match.end()
    if cursor < len(text):
        pieces.append(text[cursor:])
    if not any(isinstance(piece, Expression) for piece in pieces):
        return Literal(text)
    if len(pieces) == 1 and isinstance(pieces[0], Expression):
        return Value(pieces[0])
    return Text(tuple(pieces))


def _render(node: Node, scope: Mapping[str, Any]) -> Any:
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Value):
        return node.expression.evaluate(scope)
    if isinstance(node, Text):
        return "".join(
            piece if isinstance(piece, str) else _as_text(piece.evaluate(scope))
            for piece in node.parts
        )
    if isinstance(node, Array):
        return [_render(item, scope) for item in node.items]
    return {key: _render(child, scope) for key, child in node.fields}


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def _expressions(node: Node) -> list[Expression]:
    if isinstance(node, Value):
        return [node.expression]
    if isinstance(node, Text):
        return [piece for piece in node.parts if isinstance(piece, Expression)]
    if isinstance(node, Array):
        return [expr for item in node.items for expr in _expressions(item)]
    if isinstance(node, Object):
        return [expr for _, child in node.fields for expr in _expressions(child)]
    return []
