"""The ingestion work queue: publishing work items, and re-queueing what fell through.

Work items go to ``ingest.doc.requested`` (stream INGEST_WORK, retention WORK_QUEUE, durable
consumer ``knowledge-ingest`` — declared in services.kit.events) with the de-duplication id
``ingest:{tenant}:{document}:{revision}``. A work item can still be lost between a document's
commit and its publish (a crash in between); the sweeper finds documents waiting longer than
``waiting_s`` while the queue is idle, and publishes them again. At startup it also queues the
documents indexed into another index generation (a new model, or a lost local index).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from nats.js import JetStreamContext
from nats.js.errors import Error as JetStreamError

from services.kit import errors, events
from supportmesh.knowledge.v1 import knowledge_service_pb2 as pb

if TYPE_CHECKING:
    from services.knowledge.store import Documents

_log = logging.getLogger("supportmesh.knowledge.tasks")
SPEC = next(spec for spec in events.CONSUMERS if spec.durable == "knowledge-ingest")


def msg_id(tenant_id: str, document_id: str, revision: int) -> str:
    """The de-duplication id of a work item."""
    return f"ingest:{tenant_id}:{document_id}:{revision}"


class TaskQueue:
    """Publishes work items on the JetStream work queue."""

    def __init__(self, js: Callable[[], JetStreamContext | None]) -> None:
        """Publish through the JetStream context ``js()`` returns (None while disconnected)."""
        self._js = js

    async def publish(self, tenant_id: str, document_id: str, revision: int) -> None:
        """Queue one document revision; UNAVAILABLE when JetStream does not take it."""
        js = self._js()
        if js is None:
            raise errors.Unavailable("the ingestion queue is not connected yet; retry")
        task = pb.IngestTask(tenant_id=tenant_id, document_id=document_id, revision=revision)
        try:
            await events.publish(
                js, events.INGEST_DOC_REQUESTED, task, msg_id(tenant_id, document_id, revision)
            )
        except (JetStreamError, TimeoutError, OSError) as exc:
            raise errors.Unavailable("the ingestion queue did not accept the work; retry") from exc


class Sweeper:
    """Re-queues documents whose work item was lost, and those of another index generation."""

    def __init__(
        self,
        documents: Documents,
        queue: TaskQueue,
        js: Callable[[], JetStreamContext | None],
        waiting_s: float = 120.0,
        batch: int = 500,
    ) -> None:
        """Look for documents waiting longer than ``waiting_s``, ``batch`` at a time."""
        self._documents = documents
        self._queue = queue
        self._js = js
        self._waiting_s = waiting_s
        self._batch = batch

    async def _idle(self) -> bool:
        js = self._js()
        if js is None:
            return False
        info = await js.consumer_info(SPEC.stream, SPEC.durable)
        return not (info.num_pending or info.num_ack_pending)

    async def sweep(self, generation: str | None = None) -> int:
        """Queue again what is pending (and, given ``generation``, what is indexed elsewhere)."""
        if generation is None and not await self._idle():
            return 0  # work is flowing: waiting documents are in the queue, not lost
        since = datetime.now(UTC) - timedelta(seconds=self._waiting_s)
        found = await self._documents.pending(generation, since, self._batch)
        for tenant_id, document_id, revision in found:
            if generation is not None:
                await self._documents.requeue(tenant_id, document_id, revision)
            await self._queue.publish(tenant_id, document_id, revision)
        if found:
            _log.info("documents queued again", extra={"count": len(found)})
        return len(found)

    async def run(self, every_s: float) -> None:
        """Sweep every ``every_s`` seconds until cancelled."""
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the next sweep tries again
                _log.warning("sweep failed", exc_info=True)
