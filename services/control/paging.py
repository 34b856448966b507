"""Page sizes and opaque page tokens (AIP-158): a token is base64 of the last key returned."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from services.kit import errors

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
T = TypeVar("T")


def page_size(requested: int, field: str = "page_size") -> int:
    """The page size to use: 0 means the default, larger values are capped."""
    if requested < 0:
        raise errors.InvalidArgument("page_size must not be negative", field=field)
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode(kind: str, key: Sequence[str]) -> str:
    """A token resuming a ``kind`` listing after ``key``."""
    raw = json.dumps([kind, *key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, kind: str, arity: int, field: str = "page_token") -> list[str] | None:
    """The key a token resumes after; ``None`` for the first page, INVALID_ARGUMENT if forged."""
    if not token:
        return None
    invalid = errors.InvalidArgument("page_token is not a token of this listing", field=field)
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        decoded = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise invalid from exc
    if (
        not isinstance(decoded, list)
        or len(decoded) != arity + 1
        or decoded[0] != kind
        or not all(isinstance(part, str) for part in decoded)
    ):
        raise invalid
    return [str(part) for part in decoded[1:]]


def decode_time(value: str, field: str = "page_token") -> datetime:
    """A timestamp carried in a token."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise errors.InvalidArgument("page_token is malformed", field=field) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def decode_uuid(value: str, field: str = "page_token") -> str:
    """A row id carried in a token."""
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise errors.InvalidArgument("page_token is malformed", field=field) from exc


def split(
    rows: Sequence[T], size: int, kind: str, key: Callable[[T], Sequence[str]]
) -> tuple[list[T], str]:
    """Cut ``size + 1`` fetched rows into one page and the token for the next."""
    page = list(rows[:size])
    if len(rows) <= size or not page:
        return page, ""
    return page, encode(kind, key(page[-1]))
