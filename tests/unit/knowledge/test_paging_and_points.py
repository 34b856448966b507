"""Page tokens and stable point ids."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from services.kit import errors
from services.knowledge import paging
from services.knowledge.worker import point_id


def test_page_tokens_round_trip_and_forgeries_are_refused() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    document = str(uuid.uuid4())
    assert paging.decode(paging.encode(moment, document)) == (moment, document)
    assert paging.decode("") is None
    for forged in ("abc", "W10", paging.encode(moment, document)[:-4]):
        with pytest.raises(errors.InvalidArgument):
            paging.decode(forged)
    assert paging.page_size(0) == paging.DEFAULT_PAGE_SIZE
    assert paging.page_size(5000) == paging.MAX_PAGE_SIZE


def test_point_ids_are_stable_per_revision_and_position() -> None:
    assert point_id("a", "d", 1, "chunk", 0) == point_id("a", "d", 1, "chunk", 0)
    assert point_id("a", "d", 1, "chunk", 0) != point_id("a", "d", 2, "chunk", 0)
    assert point_id("a", "d", 1, "chunk", 0) != point_id("b", "d", 1, "chunk", 0)
    uuid.UUID(point_id("a", "d", 1, "faq", 3))
