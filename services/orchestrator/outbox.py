"""The transactional outbox: events inserted with the state change, published by a relay.

``add`` runs inside the caller's transaction, so an event exists exactly when the change it
reports committed. The relay publishes unsent rows in order with ``Nats-Msg-Id`` = the event
id and then marks them sent: a crash between publish and mark republishes, and JetStream's
duplicate window drops the copy (at-least-once publish + de-duplication = exactly one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from google.protobuf.message import Message
from nats.js import JetStreamContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.kit import db

_log = logging.getLogger("supportmesh.orchestrator.outbox")

_INSERT = text(
    "INSERT INTO app.event_outbox (event_id, subject, payload) VALUES (:id, :subject, :payload) "
    "ON CONFLICT (event_id) DO NOTHING"
)
_PENDING = text(
    "SELECT seq, event_id, subject, payload FROM app.event_outbox WHERE sent_at IS NULL "
    "ORDER BY seq LIMIT :limit FOR UPDATE SKIP LOCKED"
)
_MARK = text("UPDATE app.event_outbox SET sent_at = now() WHERE seq = ANY(:seqs)")


async def add(connection: AsyncConnection, subject: str, event: Message, event_id: str = "") -> str:
    """Queue ``event`` on ``subject`` in the current transaction; returns its event id."""
    (found,) = await add_many(connection, [(subject, event, event_id)])
    return found


async def add_many(
    connection: AsyncConnection, items: Sequence[tuple[str, Message, str]]
) -> list[str]:
    """Queue ``(subject, event, event id)`` items in order, in one round trip; their ids."""
    rows = [
        {
            "id": event_id or uuid.uuid4().hex,
            "subject": subject,
            "payload": event.SerializeToString(),
        }
        for subject, event, event_id in items
    ]
    if rows:
        await connection.execute(_INSERT, rows[0] if len(rows) == 1 else rows)
    return [str(row["id"]) for row in rows]


Row = tuple[int, str, str, bytes]  # (seq, event id, subject, payload) of an outbox row


async def publish_rows(
    js: JetStreamContext, rows: Sequence[Row], timeout_s: float = 2.0
) -> list[int]:
    """Publish ``rows`` in order without waiting for each ack; the seqs JetStream stored.

    The messages go out one after another on the connection, so the stream keeps their
    order, and their acknowledgements are awaited together: one wait for the batch, where
    one round trip per row made the relay fall behind under load. A row whose publish
    fails (no stream for its subject, or no ack within ``timeout_s``) stays unsent and is
    tried again by the next flush; the rows after it are not held back by it.
    """
    acks: list[asyncio.Future[Any]] = []
    try:
        for _seq, event_id, subject, payload in rows:
            acks.append(
                await js.publish_async(subject, bytes(payload), headers={"Nats-Msg-Id": event_id})
            )
    except Exception:  # noqa: BLE001 - the rows not yet sent stay in the outbox
        _log.warning("outbox publish failed", exc_info=True)
    if not acks:
        return []
    _, late = await asyncio.wait(acks, timeout=timeout_s)
    for ack in late:
        ack.cancel()
    sent, failed = [], []
    for (seq, *_), ack in zip(rows, acks, strict=False):
        if ack.cancelled():
            failed.append(f"{seq}: no ack within {timeout_s} s")
        elif ack.exception() is not None:
            failed.append(f"{seq}: {ack.exception()!r}")
        else:
            sent.append(seq)
    if failed:
        _log.warning("outbox rows not published; retried later", extra={"rows": failed})
    return sent


class Relay:
    """Publishes committed outbox rows to JetStream; ``wake`` after a commit to skip the poll."""

    def __init__(
        self,
        engine: AsyncEngine,
        js: JetStreamContext,
        *,
        poll_s: float = 0.5,
        batch: int = 200,
        settle_s: float = 0.02,
    ) -> None:
        """Relay rows of ``engine``'s outbox to ``js``.

        A wake waits ``settle_s`` before reading the outbox, so the commits of that moment
        (a run writes events at its start, around each tool call and at its end) share one
        read and one mark instead of one each; events reach JetStream that much later.
        """
        self._engine, self._js, self._poll_s, self._batch = engine, js, poll_s, batch
        self._settle_s = settle_s
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Publish now rather than at the next poll."""
        self._wake.set()

    async def flush(self) -> int:
        """Publish one batch of unsent rows; returns how many were published."""
        async with db.global_transaction(self._engine) as connection:
            rows = (await connection.execute(_PENDING, {"limit": self._batch})).all()
            sent = await publish_rows(self._js, [(r[0], r[1], r[2], r[3]) for r in rows])
            if sent:
                await connection.execute(_MARK, {"seqs": sent})
        return len(sent)

    async def run(self) -> None:
        """Relay until cancelled."""
        while True:
            try:
                while await self.flush() >= self._batch:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - database or NATS trouble: try again later
                _log.warning("outbox relay failed; retrying", exc_info=True)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_s):
                    await self._wake.wait()
                await asyncio.sleep(self._settle_s)
            self._wake.clear()
