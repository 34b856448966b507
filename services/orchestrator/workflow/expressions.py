"""A small, safe expression language for conditions: parsed with ``ast``, never ``eval``-ed.

Grammar: ``and`` / ``or`` / ``not`` (also the seed's upper-case ``AND`` / ``OR`` / ``NOT``),
comparisons ``== != < <= > >= in not in`` (chainable), literals (strings, numbers,
``true``/``false``/``null`` in either case), list literals, and dotted names such as
``order.status`` that look keys up in JSON data. Calls, indexing, arithmetic, lambdas,
comprehensions and names starting with ``_`` are refused at parse time. A missing key reads
as ``null``; ordering across types (or against ``null``) is false rather than an error, so a
condition can never crash a run. ``a or b`` yields the deciding operand, as in Python, so
``${input.name or 'there'}`` gives a default.
"""

from __future__ import annotations

import ast
import io
import tokenize
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

MAX_LENGTH = 1000
MAX_DEPTH = 32

CompareOp = Literal["==", "!=", "<", "<=", ">", ">=", "in", "not in"]
_COMPARE: Mapping[type[ast.cmpop], CompareOp] = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.In: "in",
    ast.NotIn: "not in",
}
_LITERALS: Mapping[str, bool | None] = {
    "true": True,
    "True": True,
    "false": False,
    "False": False,
    "null": None,
    "None": None,
}
_SEED_KEYWORDS = {"AND": "and", "OR": "or", "NOT": "not"}
_REFUSED = {
    ast.Call: "function calls are not allowed",
    ast.Subscript: "indexing is not allowed",
    ast.BinOp: "arithmetic is not allowed",
    ast.Lambda: "lambdas are not allowed",
    ast.IfExp: "conditional expressions are not allowed",
    ast.NamedExpr: "assignment expressions are not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.Dict: "dict literals are not allowed",
}


class ExpressionError(ValueError):
    """An expression that does not parse or uses something outside the language."""


@dataclass(frozen=True)
class Const:
    """A literal value."""

    value: str | int | float | bool | None


@dataclass(frozen=True)
class Path:
    """A dotted name: a root name then keys looked up in mappings."""

    parts: tuple[str, ...]


@dataclass(frozen=True)
class ListOf:
    """A list literal."""

    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Not:
    """Logical negation."""

    operand: Expr


@dataclass(frozen=True)
class Logic:
    """``and`` / ``or`` over two or more operands, short-circuiting."""

    op: Literal["and", "or"]
    operands: tuple[Expr, ...]


@dataclass(frozen=True)
class Compare:
    """A possibly chained comparison, ``a < b <= c``."""

    left: Expr
    rest: tuple[tuple[CompareOp, Expr], ...]


Expr = Const | Path | ListOf | Not | Logic | Compare


@dataclass(frozen=True)
class Expression:
    """A parsed expression with its source text."""

    source: str
    root: Expr

    def names(self) -> frozenset[str]:
        """The root names the expression reads (``order`` in ``order.status``)."""
        return frozenset(path.parts[0] for path in _paths(self.root))

    def evaluate(self, scope: Mapping[str, Any]) -> Any:
        """The expression's value over ``scope``."""
        return _evaluate(self.root, scope)

    def test(self, scope: Mapping[str, Any]) -> bool:
        """The expression's truth over ``scope``."""
        return bool(_evaluate(self.root, scope))


def parse_expression(source: str) -> Expression:
    """Parse ``source`` or raise :class:`ExpressionError` saying what is wrong."""
    if not source.strip():
        raise ExpressionError("the expression is empty")
    if len(source) > MAX_LENGTH:
        raise ExpressionError(f"the expression is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(_normalize(source).strip(), mode="eval")
    except SyntaxError as error:
        raise ExpressionError(f"syntax error: {error.msg}") from None
    return Expression(source, _convert(tree.body, 0))


def _normalize(source: str) -> str:
    # Rewrites the seed's upper-case keywords token by token, so text inside strings is kept.
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError) as error:
        raise ExpressionError(f"syntax error: {error}") from None
    rewritten = [
        tok._replace(string=_SEED_KEYWORDS.get(tok.string, tok.string))
        if tok.type == tokenize.NAME
        else tok
        for tok in tokens
    ]
    return tokenize.untokenize(rewritten)


def _convert(node: ast.expr, depth: int) -> Expr:
    if depth > MAX_DEPTH:
        raise ExpressionError(f"the expression nests deeper than {MAX_DEPTH}")
    down = depth + 1
    if isinstance(node, ast.BoolOp):
        op: Literal["and", "or"] = "and" if isinstance(node.op, ast.And) else "or"
        return Logic(op, tuple(_convert(value, down) for value in node.values))
    if isinstance(node, ast.UnaryOp):
        return _unary(node, down)
    if isinstance(node, ast.Compare):
        ops = []
        for op_node, right in zip(node.ops, node.comparators, strict=True):
            name = _COMPARE.get(type(op_node))
            if name is None:
                raise ExpressionError(f"the operator {type(op_node).__name__} is not allowed")
            ops.append((name, _convert(right, down)))
        return Compare(_convert(node.left, down), tuple(ops))
    if isinstance(node, ast.Constant):
        if isinstance(node.value, str | int | float | bool) or node.value is None:
            return Const(node.value)
        raise ExpressionError(f"the literal {node.value!r} is not allowed")
    if isinstance(node, ast.List | ast.Tuple):
        return ListOf(tuple(_convert(item, down) for item in node.elts))
    if isinstance(node, ast.Name | ast.Attribute):
        return _path(node)
    message = _REFUSED.get(type(node), f"{type(node).__name__} is not allowed")
    raise ExpressionError(message)


def _unary(node: ast.UnaryOp, depth: int) -> Expr:
    if isinstance(node.op, ast.Not):
        return Not(_convert(node.operand, depth))
    operand = node.operand
    if isinstance(node.op, ast.USub | ast.UAdd) and isinstance(operand, ast.Constant):
        value = operand.value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return Const(-value if isinstance(node.op, ast.USub) else value)
    raise ExpressionError("arithmetic is not allowed")


def _path(node: ast.expr) -> Expr:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        raise ExpressionError("only dotted names may be followed by '.'")
    if not parts and node.id in _LITERALS:
        return Const(_LITERALS[node.id])
    parts.append(node.id)
    parts.reverse()
    private = [part for part in parts if part.startswith("_")]
    if private:
        raise ExpressionError(f"names starting with '_' are not allowed: {private[0]}")
    return Path(tuple(parts))


def _paths(expr: Expr) -> list[Path]:
    if isinstance(expr, Path):
        return [expr]
    if isinstance(expr, ListOf):
        return [path for item in expr.items for path in _paths(item)]
    if isinstance(expr, Not):
        return _paths(expr.operand)
    if isinstance(expr, Logic):
        return [path for operand in expr.operands for path in _paths(operand)]
    if isinstance(expr, Compare):
        return _paths(expr.left) + [path for _, right in expr.rest for path in _paths(right)]
    return []


def lookup(scope: Mapping[str, Any], parts: tuple[str, ...]) -> Any:
    """Follow ``parts`` through nested mappings; anything missing reads as ``None``."""
    value: Any = scope
    for part in parts:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _evaluate(expr: Expr, scope: Mapping[str, Any]) -> Any:
    if isinstance(expr, Const):
        return expr.value
    if isinstance(expr, Path):
        return lookup(scope, expr.parts)
    if isinstance(expr, ListOf):
        return [_evaluate(item, scope) for item in expr.items]
    if isinstance(expr, Not):
        return not _evaluate(expr.operand, scope)
    if isinstance(expr, Logic):
        # Like Python, the deciding operand is the value, so `input.name or 'there'` defaults.
        value: Any = None
        for operand in expr.operands:
            value = _evaluate(operand, scope)
            if bool(value) is (expr.op == "or"):
                return value
        return value
    left = _evaluate(expr.left, scope)
    for op, right_expr in expr.rest:
        right = _evaluate(right_expr, scope)
        if not _compare(op, left, right):
            return False
        left = right
    return True


def _compare(op: CompareOp, left: Any, right: Any) -> bool:
    if op == "==":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    if op in ("in", "not in"):
        found = _contains(right, left)
        return found if op == "in" else not found
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (left, right))
    if not (numbers or (isinstance(left, str) and isinstance(right, str))):
        return False
    if op == "<":
        return bool(left < right)
    if op == "<=":
        return bool(left <= right)
    if op == ">":
        return bool(left > right)
    return bool(left >= right)


def _contains(container: Any, item: Any) -> bool:
    if isinstance(container, str):
        return isinstance(item, str) and item in container
    if isinstance(container, list | tuple):
        return item in container
    if isinstance(container, Mapping):
        try:
            return item in container
        except TypeError:  # an unhashable item (a list) is in no mapping
            return False
    return False
