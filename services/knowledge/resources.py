"""Database rows as the contract's messages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf import timestamp_pb2
from sqlalchemy.engine import Row

from services.knowledge import names
from supportmesh.knowledge.v1 import knowledge_service_pb2 as pb


def timestamp(moment: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A protobuf Timestamp for a database time (None stays None)."""
    if moment is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def document(tenant_id: str, row: Row[Any]) -> pb.Document:
    """A document row as a Document."""
    return pb.Document(
        name=names.document(tenant_id, str(row.document_id)),
        title=row.title,
        source_uri=row.source_uri,
        external_id=row.external_id or "",
        media_type=row.media_type,
        kind=names.KIND_VALUES[row.kind],
        labels=dict(row.labels or {}),
        status=names.STATUS_VALUES[row.status],
        failure_reason=row.failure_reason,
        size_bytes=int(row.size_bytes),
        content_sha256=row.content_sha256,
        chunk_count=int(row.chunk_count),
        create_time=timestamp(row.created_at),
        update_time=timestamp(row.updated_at),
        index_time=timestamp(row.indexed_at),
    )
