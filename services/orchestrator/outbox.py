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
            sent: list[int] = []
            for seq, event_id, subject, payload in rows:
                try:
                    await self._js.publish(
                        subject, bytes(payload), headers={"Nats-Msg-Id": event_id}, timeout=2.0
                    )
                except Exception:  # noqa: BLE001 - the row stays unsent and is retried
                    _log.warning("outbox publish failed", exc_info=True)
                    break
                sent.append(seq)
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
