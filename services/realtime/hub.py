"""In-process fan-out of a session's new events to the connections attached here.

The Valkey log is the source of truth; the hub only saves local connections a round trip
while this instance produces the session's answers. It also wakes them (:data:`NUDGE`) to
look in Valkey: when a message for their session was queued on another instance, and when
this instance stops answering it. A subscriber's queue is drained by its connection's feed
task, which never blocks, so the queue stays short.
"""

from __future__ import annotations

import asyncio

from supportmesh.spec.v1 import message_pb2

SessionKey = tuple[str, str]  # (tenant_id, session_id)
NUDGE = message_pb2.StreamEvent()  # sequence 0: not an event of the session, only a wake-up


class Hub:
    """Subscribers per session, in this process."""

    def __init__(self) -> None:
        """No subscribers yet."""
        self._subscribers: dict[SessionKey, set[asyncio.Queue[message_pb2.StreamEvent]]] = {}

    def subscribe(self, key: SessionKey) -> asyncio.Queue[message_pb2.StreamEvent]:
        """A queue that receives the session's events published from now on."""
        queue: asyncio.Queue[message_pb2.StreamEvent] = asyncio.Queue()
        self._subscribers.setdefault(key, set()).add(queue)
        return queue

    def unsubscribe(self, key: SessionKey, queue: asyncio.Queue[message_pb2.StreamEvent]) -> None:
        """Stop delivering to ``queue``."""
        found = self._subscribers.get(key)
        if found is not None:
            found.discard(queue)
            if not found:
                del self._subscribers[key]

    def publish(self, key: SessionKey, event: message_pb2.StreamEvent) -> None:
        """Hand a logged event (sequence set) to every local subscriber of the session."""
        for queue in self._subscribers.get(key, ()):
            queue.put_nowait(event)

    def nudge(self, key: SessionKey) -> None:
        """Wake the session's local subscribers: look in Valkey for what changed."""
        for queue in self._subscribers.get(key, ()):
            queue.put_nowait(NUDGE)
