"""YAML loading that remembers where every node is, so an error can name its line."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from services.orchestrator.workflow.errors import Issue, IssueCode, WorkflowError

# Bounds that keep a hostile file (huge, or an alias bomb) from costing more than a bad one.
MAX_SOURCE_BYTES = 256 * 1024
MAX_NODES = 20_000
_STR_TAG = "tag:yaml.org,2002:str"


@dataclass(frozen=True)
class Position:
    """A 1-based line and column."""

    line: int
    column: int


@dataclass(frozen=True)
class SourceMap:
    """Positions of every value and every mapping key, by JSON pointer."""

    values: Mapping[str, Position]
    keys: Mapping[str, Position]

    def locate(self, path: str, *, key: bool = False) -> Position:
        """The position of ``path`` (its key when asked), else of its nearest known ancestor."""
        if key and path in self.keys:
            return self.keys[path]
        while path not in self.values and path:
            path = path.rsplit("/", 1)[0]
        return self.values.get(path, Position(1, 1))

    def issue(
        self, path: str, message: str, code: IssueCode = "schema", *, key: bool = False
    ) -> Issue:
        """An issue located at ``path``."""
        where = self.locate(path, key=key)
        return Issue(path, where.line, where.column, message, code)


def pointer(parts: Iterable[str | int]) -> str:
    """The JSON pointer (RFC 6901) of a path."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as text, so every document is plain JSON data."""


def _timestamp_as_text(loader: _Loader, node: Node) -> str:
    assert isinstance(node, ScalarNode)
    return str(loader.construct_scalar(node))


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)


def load_yaml(text: str, *, source: str = "<workflow>") -> tuple[Any, SourceMap]:
    """Parse one YAML document into JSON-compatible data plus its source map."""
    if len(text.encode()) > MAX_SOURCE_BYTES:
        raise WorkflowError([Issue("", 1, 1, "file is larger than 256 KiB", "yaml")], source=source)
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = f"YAML syntax error: {error.problem or error.context}"
        raise WorkflowError([Issue("", line, column, message, "yaml")], source=source) from None
    except yaml.YAMLError as error:
        raise WorkflowError(
            [Issue("", 1, 1, f"YAML error: {error}", "yaml")], source=source
        ) from None
    if node is None:
        raise WorkflowError([Issue("", 1, 1, "the document is empty", "yaml")], source=source)
    walker = _Walker()
    walker.walk(node, "")
    if walker.issues:
        raise WorkflowError(walker.issues, source=source)
    loader = _Loader("")
    try:
        data = loader.construct_document(node)
    except yaml.YAMLError as error:
        raise WorkflowError(
            [Issue("", 1, 1, f"YAML error: {error}", "yaml")], source=source
        ) from None
    finally:
        loader.dispose()
    return data, SourceMap(walker.values, walker.keys)


class _Walker:
    """Records node positions and refuses what plain JSON cannot say (duplicate or odd keys)."""

    def __init__(self) -> None:
        self.values: dict[str, Position] = {}
        self.keys: dict[str, Position] = {}
        self.issues: list[Issue] = []
        self.visited = 0

    def walk(self, node: Node, path: str) -> None:
        """Visit ``node`` at ``path`` and everything below it."""
        self.visited += 1
        if self.visited > MAX_NODES:
            if self.visited == MAX_NODES + 1:
                self.issues.append(_at(node, path, f"more than {MAX_NODES} YAML nodes"))
            return
        self.values[path] = _position(node)
        if isinstance(node, MappingNode):
            self._mapping(node, path)
        elif isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                self.walk(item, f"{path}/{index}")

    def _mapping(self, node: MappingNode, path: str) -> None:
        seen: dict[str, Position] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag != _STR_TAG:
                self.issues.append(_at(key_node, path, "mapping keys must be plain strings"))
                continue
            if key_node.value == "<<":
                self.issues.append(_at(key_node, path, "YAML merge keys (<<) are not supported"))
                continue
            name = key_node.value
            child = path + pointer([name])
            if name in seen:
                first = seen[name].line
                message = f"duplicate key '{name}' (first defined on line {first})"
                self.issues.append(_at(key_node, child, message))
                continue
            seen[name] = _position(key_node)
            self.keys[child] = seen[name]
            self.walk(value_node, child)


def _position(node: Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


def _at(node: Node, path: str, message: str) -> Issue:
    where = _position(node)
    return Issue(path, where.line, where.column, message, "yaml")
