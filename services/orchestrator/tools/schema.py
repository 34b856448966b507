"""A JSON Schema subset, enough to check tool inputs and outputs against their ToolSpecs.

Supported keywords: type, properties, required, additionalProperties (boolean), items,
minItems, maxItems, minLength, maxLength, pattern, format (uuid, email), minimum, maximum,
enum. Anything else is ignored, as JSON Schema ignores unknown keywords.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

JsonObject = dict[str, Any]

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "null": (type(None),),
    "number": (int, float),
    "integer": (int,),
}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _is(value: Any, kind: str) -> bool:
    if kind == "integer" and isinstance(value, float):
        return value.is_integer()
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES.get(kind, (object,)))


def _format_ok(value: str, fmt: str) -> bool:
    if fmt == "email":
        return bool(_EMAIL.match(value))
    if fmt == "uuid":
        try:
            uuid.UUID(value)
        except ValueError:
            return False
    return True


def problems(value: Any, schema: JsonObject, path: str = "") -> Iterator[tuple[str, str]]:
    """Yield ``(path, message)`` for every way ``value`` breaks ``schema``."""
    where = path or "$"
    kinds = schema.get("type")
    if kinds is not None:
        allowed = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_is(value, kind) for kind in allowed):
            yield where, f"must be of type {' or '.join(allowed)}"
            return
    if "enum" in schema and value not in schema["enum"]:
        yield where, f"must be one of {schema['enum']}"
    if isinstance(value, str):
        yield from _string(value, schema, where)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            yield where, f"must be at least {schema['minimum']:g}"
        if "maximum" in schema and value > schema["maximum"]:
            yield where, f"must be at most {schema['maximum']:g}"
    elif isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            yield where, f"must have at least {schema['minItems']:g} items"
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            yield where, f"must have at most {schema['maxItems']:g} items"
        if isinstance(schema.get("items"), dict):
            for index, item in enumerate(value):
                yield from problems(item, schema["items"], f"{path}[{index}]")
    elif isinstance(value, dict):
        yield from _object(value, schema, path)


def _string(value: str, schema: JsonObject, where: str) -> Iterator[tuple[str, str]]:
    if "minLength" in schema and len(value) < schema["minLength"]:
        yield where, f"must be at least {schema['minLength']:g} characters long"
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        yield where, f"must be at most {schema['maxLength']:g} characters long"
    if "pattern" in schema and not re.search(schema["pattern"], value):
        yield where, f"must match {schema['pattern']}"
    if "format" in schema and not _format_ok(value, str(schema["format"])):
        yield where, f"must be a valid {schema['format']}"


def _object(value: JsonObject, schema: JsonObject, path: str) -> Iterator[tuple[str, str]]:
    properties: JsonObject = schema.get("properties", {})
    for name in schema.get("required", []):
        if name not in value:
            yield f"{path}.{name}" if path else name, "is required"
    for name, item in value.items():
        child = f"{path}.{name}" if path else name
        if name in properties:
            yield from problems(item, properties[name], child)
        elif schema.get("additionalProperties") is False:
            yield child, "is not allowed"
        elif isinstance(schema.get("additionalProperties"), dict):
            yield from problems(item, schema["additionalProperties"], child)
