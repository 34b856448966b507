"""A connection's bounded send buffer: under backpressure token deltas coalesce, then drop.

Events wait here between the session feed and the client. While the client keeps up the
buffer stays short; once it holds ``capacity`` events a new token delta is merged into the
delta at the tail (marked ``coalesced``, carrying the last merged sequence) and, when that
delta has reached ``max_delta_chars``, dropped. Tool events, final messages and errors are
always queued: a run has few of them, and each lets at most one more delta in behind it, so
the buffer never holds more than ``capacity`` plus twice the run's non-delta events.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from supportmesh.spec.v1 import message_pb2

StreamEvent = message_pb2.StreamEvent
TERMINAL = frozenset({"final_message", "error"})


def kind(event: StreamEvent) -> str:
    """Which event the oneof holds ('token_delta', 'final_message', …)."""
    return event.WhichOneof("event") or ""


def is_terminal(event: StreamEvent) -> bool:
    """Whether ``event`` ends an answer."""
    return kind(event) in TERMINAL


class Outbox:
    """Bounded FIFO of events for one connection."""

    def __init__(
        self,
        capacity: int = 32,
        max_delta_chars: int = 8192,
        on_drop: Callable[[str], None] | None = None,
    ) -> None:
        """Hold about ``capacity`` events; ``on_drop('coalesced'|'dropped')`` counts losses."""
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.max_delta_chars = max_delta_chars
        self._on_drop = on_drop or (lambda _: None)
        self._items: deque[StreamEvent] = deque()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        """Events waiting to be sent."""
        return len(self._items)

    def put(self, event: StreamEvent) -> None:
        """Queue ``event``; never blocks (a full buffer coalesces or drops token deltas)."""
        if kind(event) == "token_delta" and len(self._items) >= self.capacity:
            tail = self._items[-1]
            if kind(tail) == "token_delta":
                text = tail.token_delta.text + event.token_delta.text
                if len(text) > self.max_delta_chars:
                    self._on_drop("dropped")
                    return
                # Events may be shared between connections: merge into a copy.
                merged = StreamEvent()
                merged.CopyFrom(tail)
                merged.sequence = event.sequence
                merged.token_delta.text = text
                merged.token_delta.coalesced = True
                self._items[-1] = merged
                self._on_drop("coalesced")
                return
        self._items.append(event)
        self._ready.set()

    async def get(self, wait_s: float | None = None) -> StreamEvent | None:
        """The oldest event, waiting up to ``wait_s`` seconds; None when none came."""
        while not self._items:
            self._ready.clear()
            try:
                async with asyncio.timeout(wait_s):  # not wait_for: see Connection._from_hub
                    await self._ready.wait()
            except TimeoutError:
                return None
        return self._items.popleft()
