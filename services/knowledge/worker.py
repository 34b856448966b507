"""Ingestion work: one document revision read, chunked, embedded and indexed, exactly once.

Delivery is at least once (a worker may die after indexing and before its ack), so the work
is idempotent: point ids derive from (tenant, document, revision, position), an upsert of the
same revision rewrites the same points, and only older revisions' points are deleted. The
revision is recorded INDEXED only while it is still the document's current one; a revision
overtaken meanwhile (a newer submission, a deletion) removes its own points again.

Bad content (a PDF without text, a FAQ without questions) fails the document with a reason
and is acknowledged. Anything else is retried with the consumer's backoff; the last attempt
also marks the document FAILED before the message goes to the dead-letter queue.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2
from nats.aio.msg import Msg
from sqlalchemy.engine import Row

from services.kit import errors
from services.knowledge import chunking, media
from services.knowledge.embeddings import Embedder
from services.knowledge.index import POSITION, IndexMeta, Point, Removal, VectorIndex
from services.knowledge.lexical import Lexical, Terms
from services.knowledge.store import Claimed, Documents
from services.knowledge.tasks import SPEC
from supportmesh.common.v1 import errors_pb2
from supportmesh.events.v1 import events_pb2
from supportmesh.knowledge.v1 import knowledge_service_pb2 as pb

_log = logging.getLogger("supportmesh.knowledge.worker")
_POINTS = uuid.UUID("5d0c1f7e-8a52-4c55-9a4b-0b6f3c8e2d11")
Publish = Callable[[events_pb2.DocumentProcessedEvent, str], Awaitable[None]]
Checkpoint = Callable[[str], Awaitable[None]]
_INVALID = errors.InvalidArgument("", reason=errors_pb2.ERROR_REASON_VALIDATION_FAILED)
_INTERNAL = errors.Internal("", reason=errors_pb2.ERROR_REASON_INTERNAL)


@dataclass(frozen=True)
class ChunkingConfig:
    """Chunk size and overlap, in tokens."""

    max_tokens: int = 150
    overlap: int = 30


async def no_checkpoint(name: str) -> None:
    """The production checkpoint: nothing happens."""


def point_id(tenant_id: str, document_id: str, revision: int, kind: str, index: int) -> str:
    """A stable point id: the same revision's same chunk is always the same point."""
    return str(uuid.uuid5(_POINTS, f"{tenant_id}/{document_id}/{revision}/{kind}/{index}"))


def build_points(
    tenant_id: str, row: Row[Any], title: str, texts: Sequence[tuple[str, str, dict[str, Any]]],
    vectors: Sequence[Sequence[float]], terms: Sequence[Terms | None] | None = None,
) -> list[Point]:  # fmt: skip
    """Points for ``(kind, chunk id, extra payload)`` entries, their vectors and terms."""
    base = {
        "tenant_id": tenant_id,
        "document_id": str(row.document_id),
        "revision": int(row.revision),
        "title": title,
        "source_uri": row.source_uri,
        "labels": dict(row.labels or {}),
    }
    points = []
    position = 0  # of a passage in its document; the first (0) speaks for it (see index.py)
    found = terms if terms is not None else [None] * len(texts)
    for index, ((kind, chunk_id, extra), vector, lexical) in enumerate(
        zip(texts, vectors, found, strict=True)
    ):
        pid = point_id(tenant_id, str(row.document_id), int(row.revision), kind, index)
        payload = {**base, "kind": kind, "chunk_id": chunk_id, **extra}
        if kind == "chunk":
            payload[POSITION], position = position, position + 1
        points.append(Point(pid, vector, payload, lexical))
    return points


def passage_terms(lexical: Lexical, found: Sequence[Entry]) -> list[Terms | None]:
    """BM25 terms of every passage point (FAQ question points are matched densely only)."""
    return [lexical.passage(text) if kind == "chunk" else None for text, (kind, _, _) in found]


Entry = tuple[str, tuple[str, str, dict[str, Any]]]


def entries(
    kind: str, title: str, blocks: list[media.Block], config: ChunkingConfig
) -> list[Entry]:
    """(text to embed, (point kind, chunk id, payload)) for every point of a document."""
    found: list[Entry] = []
    if kind == "FAQ":
        faqs = chunking.faq_entries(blocks)
        if not faqs:
            raise media.DocumentError("the FAQ document has no question/answer entries")
        for entry in faqs:
            extra = {"question": entry.question, "answer": entry.answer}
            text = f"{entry.question}\n\n{entry.answer}"
            passage: dict[str, Any] = {"text": text, "headings": [], "page": 0}
            found.append((entry.question, ("faq", f"q{entry.index}", extra)))
            found.append((text, ("chunk", f"q{entry.index}", passage)))
        return found
    chunks = chunking.chunk(blocks, config.max_tokens, config.overlap)
    if not chunks:
        raise media.DocumentError("the document has no readable text")
    for chunk in chunks:
        payload = {"text": chunk.text, "headings": list(chunk.headings), "page": chunk.page}
        found.append((chunk.embedding_text(title), ("chunk", f"c{chunk.index}", payload)))
    return found


class Processor:
    """Indexes one document revision at a time (see the module docstring)."""

    def __init__(
        self,
        documents: Documents,
        index: VectorIndex,
        embedder: Embedder,
        publish: Publish,
        config: ChunkingConfig = ChunkingConfig(),
        checkpoint: Checkpoint = no_checkpoint,
        lexical: Lexical | None = None,
    ) -> None:
        """Read from ``documents``, write to ``index`` with ``embedder``'s vectors."""
        self._documents = documents
        self._index = index
        self._embedder = embedder
        self._publish = publish
        self._config = config
        self._checkpoint = checkpoint
        self._lexical = lexical or Lexical()
        self.meta: IndexMeta | None = None

    async def handle(self, msg: Msg) -> None:
        """The consumer's handler: one work item."""
        task = pb.IngestTask.FromString(msg.data)
        last = msg.metadata.num_delivered >= SPEC.max_deliver
        await self.process(task, last_attempt=last)

    async def process(self, task: pb.IngestTask, *, last_attempt: bool = False) -> None:
        """Index the task's revision unless it is stale or already done."""
        assert self.meta is not None, "open the index before processing"
        tenant, document, revision = task.tenant_id, task.document_id, int(task.revision)
        claimed = await self._documents.claim(tenant, document, revision, self.meta.generation)
        if claimed is None:
            _log.info("stale work item skipped", extra={"document_id": document})
            return
        if not isinstance(claimed, Claimed):  # done before: make sure the event went out
            await self._event(tenant, document, revision, pb.DOCUMENT_STATUS_INDEXED, claimed)
            return
        try:
            await self._index_revision(tenant, claimed)
        except media.DocumentError as exc:
            await self._fail(tenant, document, revision, str(exc), _INVALID)
        except Exception as exc:
            if last_attempt:
                reason = f"gave up after {SPEC.max_deliver} attempts: {type(exc).__name__}"
                await self._fail(tenant, document, revision, reason, _INTERNAL)
            raise

    async def _index_revision(self, tenant: str, claimed: Claimed) -> None:
        row, document, revision = (
            claimed.row,
            str(claimed.row.document_id),
            int(claimed.row.revision),
        )
        await self._checkpoint("processing")
        blocks = await asyncio.to_thread(media.read, row.media_type, claimed.content)
        title = row.title or media.title_of(row.media_type, claimed.content, blocks)
        found = entries(row.kind, title, blocks, self._config)
        vectors = await self._embedder.embed([text for text, _ in found])
        terms = passage_terms(self._lexical, found)
        entries_only = [entry for _, entry in found]
        points = build_points(tenant, row, title, entries_only, vectors.tolist(), terms)
        await self._index.upsert(points)
        await self._checkpoint("indexed")
        await self._index.delete(Removal(tenant, document, below_revision=revision))
        assert self.meta is not None
        values = {
            "chunks": sum(1 for p in points if p.payload["kind"] == "chunk"),
            "generation": self.meta.generation,
            "model": self.meta.model,
            "title": title,
        }
        if row.kind == "FAQ":
            values["chunks"] = sum(1 for p in points if p.payload["kind"] == "faq")
        done = await self._documents.indexed(tenant, document, revision, values)
        if done is None:  # overtaken by a newer revision or deleted: take ours out again
            await self._index.delete(Removal(tenant, document, revision=revision))
            return
        await self._event(tenant, document, revision, pb.DOCUMENT_STATUS_INDEXED, done)

    async def _fail(
        self, tenant: str, document: str, revision: int, reason: str, error: errors.DomainError
    ) -> None:
        _log.warning("document failed", extra={"document_id": document, "reason": reason})
        if await self._documents.failed(tenant, document, revision, reason):
            spec = type(error)(reason, reason=error.reason).to_spec()
            await self._event(tenant, document, revision, pb.DOCUMENT_STATUS_FAILED, None, spec)

    async def _event(
        self,
        tenant: str,
        document: str,
        revision: int,
        status: pb.DocumentStatus.ValueType,
        row: Row[Any] | None,
        error: errors_pb2.ErrorSpec | None = None,
    ) -> None:
        occurred = timestamp_pb2.Timestamp()
        occurred.FromDatetime(datetime.now(UTC))
        event = events_pb2.DocumentProcessedEvent(
            tenant_id=tenant,
            document_id=document,
            status=status,
            chunk_count=int(row.chunk_count) if row is not None else 0,
            occur_time=occurred,
        )
        if error is not None:
            event.error.CopyFrom(error)
        await self._publish(event, f"processed:{tenant}:{document}:{revision}:{int(status)}")
