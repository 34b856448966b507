"""Page sizes and opaque page tokens for ListDocuments (AIP-158): the last row's sort key."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Row

from services.kit import errors

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
_KIND = "documents"


def page_size(requested: int) -> int:
    """The page size to use: 0 means the default, larger values are capped."""
    if requested < 0:
        raise errors.InvalidArgument("page_size must not be negative", field="page_size")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode(created_at: datetime, document_id: str) -> str:
    """A token resuming after the row created at ``created_at`` with ``document_id``."""
    raw = json.dumps([_KIND, created_at.isoformat(), document_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(token: str) -> tuple[datetime, str] | None:
    """The sort key a token resumes after; None for the first page."""
    if not token:
        return None
    invalid = errors.InvalidArgument(
        "page_token is not a token of this listing", field="page_token"
    )
    try:
        kind, created, document_id = json.loads(
            base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        )
        if kind != _KIND:
            raise invalid
        return datetime.fromisoformat(created), str(uuid.UUID(document_id))
    except (binascii.Error, ValueError, TypeError) as exc:
        raise invalid from exc


def split(rows: Sequence[Row[Any]], size: int) -> tuple[list[Row[Any]], str]:
    """Cut ``size + 1`` fetched rows into one page and the token for the next."""
    page = list(rows[:size])
    if len(rows) <= size or not page:
        return page, ""
    last = page[-1]
    return page, encode(last.created_at, str(last.document_id))
