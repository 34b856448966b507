"""Documents in PostgreSQL: every query runs in a tenant transaction under forced RLS.

A document row holds the submitted bytes, its status and its ``revision``, which grows with
each changed submission: work items name a revision, so a worker can tell a current task
from a stale or repeated one, and a finished revision is recorded only if it is still the
current one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.kit import db, errors
from services.knowledge import names, paging

_COLUMNS = (
    "document_id, external_id, title, source_uri, media_type, kind, labels, status, "
    "failure_reason, size_bytes, content_sha256, fingerprint, revision, chunk_count, "
    "index_generation, embedding_model, created_at, updated_at, indexed_at"
)


def _sql(template: str) -> TextClause:
    """SQL text with ``{columns}`` filled in: the one place SQL is built, from constants only."""
    return text(template.replace("{columns}", _COLUMNS))


_BY_ID = _sql("SELECT {columns} FROM app.knowledge_documents WHERE document_id = :id")
_LOCK_BY_ID = _sql(
    "SELECT {columns}, content FROM app.knowledge_documents WHERE document_id = :id FOR UPDATE"
)
_BY_EXTERNAL = _sql(
    "SELECT {columns} FROM app.knowledge_documents WHERE external_id = :external FOR UPDATE"
)
_BY_CONTENT = _sql(
    "SELECT {columns} FROM app.knowledge_documents WHERE external_id IS NULL "
    "AND content_sha256 = :sha AND fingerprint = :fingerprint "
    "ORDER BY created_at LIMIT 1 FOR UPDATE"
)
_INSERT = _sql(
    """
    INSERT INTO app.knowledge_documents (tenant_id, external_id, title, source_uri, media_type,
      kind, labels, content, size_bytes, content_sha256, fingerprint)
    VALUES (:tenant, :external, :title, :source_uri, :media_type, :kind, CAST(:labels AS jsonb),
      :content, :size, :sha, :fingerprint)
    RETURNING {columns}
    """
)
_REPLACE = _sql(
    """
    UPDATE app.knowledge_documents SET title = :title, source_uri = :source_uri,
      media_type = :media_type, kind = :kind, labels = CAST(:labels AS jsonb), content = :content,
      size_bytes = :size, content_sha256 = :sha, fingerprint = :fingerprint,
      revision = revision + 1, status = 'QUEUED', failure_reason = '', updated_at = now()
    WHERE document_id = :id RETURNING {columns}
    """
)
_PAGE = _sql(
    """
    SELECT {columns} FROM app.knowledge_documents
    WHERE (CAST(:status AS text) IS NULL OR status = :status)
      AND (CAST(:created AS timestamptz) IS NULL
           OR (created_at, document_id) < (:created, CAST(:after AS uuid)))
    ORDER BY created_at DESC, document_id DESC LIMIT :limit
    """
)
_REQUEST = text("SELECT document_id FROM app.knowledge_requests WHERE request_id = :request")
_REMEMBER = text(
    "INSERT INTO app.knowledge_requests (tenant_id, request_id, document_id) "
    "VALUES (:tenant, :request, :id) ON CONFLICT DO NOTHING"
)
_DELETE = text("DELETE FROM app.knowledge_documents WHERE document_id = :id RETURNING revision")
_PROCESSING = text(
    "UPDATE app.knowledge_documents SET status = 'PROCESSING', updated_at = now() "
    "WHERE document_id = :id"
)
_INDEXED = _sql(
    """
    UPDATE app.knowledge_documents SET status = 'INDEXED', failure_reason = '',
      chunk_count = :chunks, index_generation = :generation, embedding_model = :model,
      title = CASE WHEN title = '' THEN :title ELSE title END,
      indexed_at = now(), updated_at = now()
    WHERE document_id = :id AND revision = :revision RETURNING {columns}
    """
)
_FAILED = text(
    "UPDATE app.knowledge_documents SET status = 'FAILED', failure_reason = :reason, "
    "updated_at = now() WHERE document_id = :id AND revision = :revision RETURNING document_id"
)
_REQUEUE = text(
    "UPDATE app.knowledge_documents SET status = 'QUEUED', updated_at = now() "
    "WHERE document_id = :id AND revision = :revision AND status = 'INDEXED'"
)
_PENDING = text(
    "SELECT tenant_id, document_id, revision "
    "FROM app.knowledge_pending_documents(:generation, :since, :limit)"
)


@dataclass(frozen=True)
class Submission:
    """A validated document submission."""

    media_type: str
    content: bytes
    content_sha256: str
    fingerprint: str
    kind: str
    title: str = ""
    source_uri: str = ""
    external_id: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Accepted:
    """What became of a submission: the row, and whether a work item must be sent."""

    row: Row[Any]
    enqueue: bool


@dataclass(frozen=True)
class Claimed:
    """A document revision a worker took on (status now PROCESSING)."""

    row: Row[Any]
    content: bytes


def _params(tenant_id: str, submission: Submission) -> dict[str, Any]:
    return {
        "tenant": tenant_id,
        "external": submission.external_id or None,
        "title": submission.title,
        "source_uri": submission.source_uri,
        "media_type": submission.media_type,
        "kind": submission.kind,
        "labels": json.dumps(dict(submission.labels), sort_keys=True),
        "content": submission.content,
        "size": len(submission.content),
        "sha": submission.content_sha256,
        "fingerprint": submission.fingerprint,
    }


async def _accept(
    connection: AsyncConnection, tenant_id: str, submission: Submission, request_id: str
) -> Accepted:
    """A replay or unchanged content adds no work; new or changed content does."""
    replayed = await connection.scalar(_REQUEST, {"request": request_id})
    if replayed is not None:
        row = (await connection.execute(_BY_ID, {"id": replayed})).one_or_none()
        if row is None:
            raise errors.NotFound("the document of this request_id was deleted")
        return Accepted(row, row.status == "QUEUED")
    if submission.external_id:
        lookup = (_BY_EXTERNAL, {"external": submission.external_id})
    else:
        params = {"sha": submission.content_sha256, "fingerprint": submission.fingerprint}
        lookup = (_BY_CONTENT, params)
    existing = (await connection.execute(*lookup)).one_or_none()
    values = _params(tenant_id, submission)
    if existing is None:
        accepted = Accepted((await connection.execute(_INSERT, values)).one(), True)
    elif existing.fingerprint == submission.fingerprint and existing.status != "FAILED":
        accepted = Accepted(existing, existing.status == "QUEUED")
    else:
        values["id"] = existing.document_id
        accepted = Accepted((await connection.execute(_REPLACE, values)).one(), True)
    if request_id:
        remember = {"tenant": tenant_id, "request": request_id, "id": accepted.row.document_id}
        await connection.execute(_REMEMBER, remember)
    return accepted


class Documents:
    """The knowledge tables of one database."""

    def __init__(self, engine: AsyncEngine) -> None:
        """Use ``engine`` (the services' role, so row-level security applies)."""
        self.engine = engine

    async def accept(
        self, tenant_id: str, items: Sequence[tuple[Submission, str]]
    ) -> list[Accepted]:
        """Store submissions in one transaction: all or none (a batch)."""
        try:
            async with db.tenant_transaction(self.engine, tenant_id) as connection:
                return [await _accept(connection, tenant_id, s, rid) for s, rid in items]
        except IntegrityError as exc:
            raise errors.Aborted("a concurrent submission of this document won; retry") from exc

    async def get(self, tenant_id: str, document_id: str) -> Row[Any]:
        """A document; NOT_FOUND when the tenant has none by that id."""
        async with db.tenant_transaction(self.engine, tenant_id) as connection:
            row = (await connection.execute(_BY_ID, {"id": document_id})).one_or_none()
        if row is None:
            raise errors.NotFound(f"{names.document(tenant_id, document_id)} not found")
        return row

    async def page(
        self, tenant_id: str, size: int, token: str, status: str
    ) -> tuple[list[Row[Any]], str]:
        """One page of documents, newest first."""
        after = paging.decode(token)
        params: dict[str, Any] = {"limit": size + 1, "status": status or None}
        params["created"], params["after"] = after if after is not None else (None, None)
        async with db.tenant_transaction(self.engine, tenant_id) as connection:
            rows = list((await connection.execute(_PAGE, params)).all())
        return paging.split(rows, size)

    async def delete(self, tenant_id: str, document_id: str, request_id: str) -> bool:
        """Remove a document's row; False when a replayed request had already removed it."""
        async with db.tenant_transaction(self.engine, tenant_id) as connection:
            if request_id and await connection.scalar(_REQUEST, {"request": request_id}):
                return False
            gone = await connection.scalar(_DELETE, {"id": document_id})
            if gone is None:
                raise errors.NotFound(f"{names.document(tenant_id, document_id)} not found")
            if request_id:
                params = {"tenant": tenant_id, "request": request_id, "id": document_id}
                await connection.execute(_REMEMBER, params)
        return True

    async def claim(
        self, tenant_id: str, document_id: str, revision: int, generation: str
    ) -> Claimed | Row[Any] | None:
        """Take a revision on: Claimed, or the row when it is already indexed, or None if stale."""
        async with db.tenant_transaction(self.engine, tenant_id) as connection:
            row = (await connection.execute(_LOCK_BY_ID, {"id": document_id})).one_or_none()
            if row is None or row.revision != revision:
                return None
            if row.status == "INDEXED" and row.index_generation == generation:
                return row
            await connection.execute(_PROCESSING, {"id": document_id})
            return Claimed(row, bytes(row.content))

    async def indexed(
        self, tenant_id: str, document_id: str, revision: int, values: Mapping[str, Any]
    ) -> Row[Any] | None:
        """Record a revision as indexed; None when it is no longer the current one."""
        params = {"id": document_id, "revision": revision, **values}
        async with db.tenant_transaction(self.engine, tenant_id) as connection:
            return (await connection.execute(_INDEXED, params)).one_or_none()

    async def failed(self, tenant_id: str, document_id: str, revision: int, reason: str) -> bool:
        """Record a revision as failed with ``reason``; False when it is no longer current."""
        params = {"id": document_id, "revision": revision, "reason": reason[:1000]}
        async with db.tenant_transaction(self.engine, tenant_id) as connection:
            return await connection.scalar(_FAILED, params) is not None

    async def requeue(self, tenant_id: str, document_id: str, revision: int) -> None:
        """Mark an indexed revision QUEUED again (its index generation is gone)."""
        params = {"id": document_id, "revision": revision}
        async with db.tenant_transaction(self.engine, tenant_id) as connection:
            await connection.execute(_REQUEUE, params)

    async def pending(
        self, generation: str | None, waiting_since: datetime, limit: int
    ) -> list[tuple[str, str, int]]:
        """(tenant, document, revision) of documents to queue again, across tenants."""
        params = {"generation": generation, "since": waiting_since, "limit": limit}
        async with db.global_transaction(self.engine) as connection:
            rows = (await connection.execute(_PENDING, params)).all()
        return [(row.tenant_id, str(row.document_id), int(row.revision)) for row in rows]
