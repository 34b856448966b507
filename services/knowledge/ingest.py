"""Accepting documents: validation at the door, dedup, storage, and the work item.

A submission is checked synchronously (media type, size, emptiness, a PDF that opens) so
bad input fails the call with INVALID_ARGUMENT and its reason, then stored QUEUED and put on
the work queue after the commit. Unchanged content (same external id or, without one, same
bytes and metadata) adds no work. If publishing fails the call fails UNAVAILABLE; a retry
with the same request_id finds the stored document and publishes again, and the de-duplication
id of the work item makes a double publish harmless.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from services.kit import errors
from services.knowledge import media, names, resources
from services.knowledge.store import Accepted, Documents, Submission
from services.knowledge.tasks import TaskQueue
from supportmesh.knowledge.v1 import knowledge_service_pb2 as pb

MAX_BATCH = 100
MAX_LABELS = 32
LABEL_KEY = re.compile(r"^[A-Za-z0-9_-]{1,63}$")
_LIMITS = {"external_id": 256, "title": 512, "source_uri": 2048, "request_id": 128}


@dataclass(frozen=True)
class Limits:
    """Bounds on what a submission may carry."""

    max_document_bytes: int


def check_labels(labels: dict[str, str], field: str) -> dict[str, str]:
    """Labels with path-safe keys and bounded values (they become payload filter keys)."""
    if len(labels) > MAX_LABELS:
        raise errors.InvalidArgument(f"{field} has more than {MAX_LABELS} entries", field=field)
    for key, value in labels.items():
        if not LABEL_KEY.match(key):
            raise errors.InvalidArgument(
                f"{field} key {key!r} must be 1-63 letters, digits, '_' or '-'", field=field
            )
        if len(value) > 256:
            raise errors.InvalidArgument(f"{field}[{key}] is longer than 256", field=field)
    return dict(labels)


def submission(request: pb.IngestDocumentRequest, limits: Limits, prefix: str = "") -> Submission:
    """The validated submission of one request; INVALID_ARGUMENT with a reason otherwise."""
    for name, limit in _LIMITS.items():
        if len(getattr(request, name)) > limit:
            field = prefix + name
            raise errors.InvalidArgument(f"{field} is longer than {limit}", field=field)
    if not request.request_id.strip():
        raise errors.InvalidArgument("request_id is required", field=prefix + "request_id")
    media_type = media.normalize(request.media_type)
    source = request.WhichOneof("source")
    if source == "text" and media_type == media.PDF:
        raise errors.InvalidArgument(
            "application/pdf content must be sent as bytes in content", field=prefix + "text"
        )
    data = request.text.encode("utf-8") if source == "text" else request.content
    media.check(media_type, data, limits.max_document_bytes, prefix + (source or "content"))
    if request.kind not in names.KIND_NAMES:
        raise errors.InvalidArgument("kind is not a DocumentKind", field=prefix + "kind")
    kind = names.KIND_NAMES[request.kind]
    labels = check_labels(dict(request.labels), prefix + "labels")
    sha = hashlib.sha256(data).hexdigest()
    identity = [sha, media_type, kind, request.title, request.source_uri, sorted(labels.items())]
    fingerprint = hashlib.sha256(json.dumps(identity).encode()).hexdigest()
    return Submission(
        media_type=media_type,
        content=data,
        content_sha256=sha,
        fingerprint=fingerprint,
        kind=kind,
        title=request.title.strip(),
        source_uri=request.source_uri,
        external_id=request.external_id,
        labels=labels,
    )


class Ingestion:
    """IngestDocument and BatchIngestDocuments."""

    def __init__(self, documents: Documents, queue: TaskQueue, limits: Limits) -> None:
        """Store in ``documents``, hand work to ``queue``, within ``limits``."""
        self._documents = documents
        self._queue = queue
        self._limits = limits

    async def _accept(
        self, tenant_id: str, items: Sequence[tuple[Submission, str]]
    ) -> list[pb.Document]:
        accepted: list[Accepted] = await self._documents.accept(tenant_id, items)
        for found in accepted:
            if found.enqueue:
                await self._queue.publish(
                    tenant_id, str(found.row.document_id), int(found.row.revision)
                )
        return [resources.document(tenant_id, found.row) for found in accepted]

    async def ingest(self, tenant_id: str, request: pb.IngestDocumentRequest) -> pb.Document:
        """Accept one document."""
        item = submission(request, self._limits)
        (document,) = await self._accept(tenant_id, [(item, request.request_id)])
        return document

    async def ingest_batch(
        self, tenant_id: str, request: pb.BatchIngestDocumentsRequest
    ) -> list[pb.Document]:
        """Accept up to 100 documents, all or none."""
        if not request.requests:
            raise errors.InvalidArgument("requests must not be empty", field="requests")
        if len(request.requests) > MAX_BATCH:
            raise errors.InvalidArgument(
                f"at most {MAX_BATCH} documents per batch", field="requests"
            )
        items: list[tuple[Submission, str]] = []
        for number, item in enumerate(request.requests):
            prefix = f"requests[{number}]."
            if item.parent and item.parent != request.parent:
                raise errors.InvalidArgument(
                    "each request's parent must be empty or the batch's", field=prefix + "parent"
                )
            items.append((submission(item, self._limits, prefix), item.request_id))
        return await self._accept(tenant_id, items)
