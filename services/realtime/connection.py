"""One client stream attached to a session: feed its outbox from the session, write it out.

The feed replays the session's logged events after the client's last seen sequence, then
follows new ones: from the in-process hub while this instance produces the answers, or by
tailing the Valkey log while another instance does. A message queued on another instance
nudges the session's connections here (:mod:`services.realtime.nudges`); polling is the
fallback, every ``poll_s`` at first and then, while the session stays quiet, less often
(doubling up to ``IDLE_BACKOFF`` times ``poll_s``), so idle connections cost Valkey and
this process little. The writer sends what the outbox holds, heartbeats when nothing
happens, and — once the client has acknowledged at least once — keeps no more than
``ack_window`` events unacknowledged, so a client that reads slowly gets coalesced deltas
even when transport buffers (Envoy, the WebSocket bridge) would hide its slowness from
HTTP/2 flow control.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from google.protobuf import timestamp_pb2
from redis.exceptions import RedisError

from services.kit import errors
from services.realtime.answers import Answers
from services.realtime.hub import NUDGE, Hub
from services.realtime.metrics import RealtimeMetrics
from services.realtime.outbox import Outbox, is_terminal
from services.realtime.sessions import Sessions
from supportmesh.common.v1 import errors_pb2
from supportmesh.spec.v1 import message_pb2

_log = logging.getLogger("supportmesh.realtime.connection")
IDLE_BACKOFF = 8
Write = Callable[[message_pb2.StreamEvent], Awaitable[None]]


@dataclass(frozen=True)
class Limits:
    """Per-connection limits and timings."""

    buffer_events: int = 32
    max_delta_chars: int = 8192
    ack_window: int = 64
    heartbeat_s: float = 15.0
    idle_timeout_s: float = 300.0
    poll_s: float = 1.0
    max_message_chars: int = 8000
    max_connections_per_tenant: int = 1000  # when the edge sends no plan limit


@dataclass
class Realtime:
    """Everything a connection needs, shared by all connections of the instance."""

    sessions: Sessions
    hub: Hub
    answers: Answers
    metrics: RealtimeMetrics
    limits: Limits


def cancelling() -> bool:
    """Whether the current task was asked to stop (a library may have masked the request)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def heartbeat() -> message_pb2.StreamEvent:
    """A heartbeat event (sequence 0: not part of the session's sequence)."""
    now = timestamp_pb2.Timestamp()
    now.GetCurrentTime()
    return message_pb2.StreamEvent(heartbeat=message_pb2.Heartbeat(server_time=now))


class Connection:
    """A stream of one session's events to one client."""

    def __init__(
        self, realtime: Realtime, tenant_id: str, session_id: str, rpc: str, max_connections: int
    ) -> None:
        """Attach to ``session_id`` of ``tenant_id`` for ``rpc`` ('Chat' or 'StreamChat')."""
        self.rt = realtime
        self.max_connections = max_connections
        self.key = (tenant_id, session_id)
        self.rpc = rpc
        self.id = uuid.uuid4().hex
        limits = realtime.limits
        self.outbox = Outbox(limits.buffer_events, limits.max_delta_chars, self._count_drop)
        self.cursor = 0
        self.acked: int | None = None
        self.last_activity = time.monotonic()
        self.sending = False
        self._acked = asyncio.Event()
        self._unacked: deque[int] = deque()  # sequences sent and not acknowledged yet
        self._quiet_s = limits.poll_s  # the next wait of a quiet session for remote answers
        self._nudged = False  # woken by a message queued elsewhere, not yet looked at

    def _count_drop(self, action: str) -> None:
        self.rt.metrics.drops.labels(action).inc()

    async def admit(self) -> None:
        """Count this connection against the tenant's limit; RESOURCE_EXHAUSTED over it."""
        try:
            await self.rt.sessions.take_slot(self.key[0], self.id, *self._slot())
        except errors.ResourceExhausted:
            self.rt.metrics.refused.labels("CONNECTION_LIMIT").inc()
            raise

    def _slot(self) -> tuple[int, int]:
        return self.max_connections, int(self.rt.limits.heartbeat_s * 3000)

    async def release(self) -> None:
        """Stop counting this connection."""
        await self.rt.sessions.free_slot(self.key[0], self.id)

    def ack(self, sequence: int) -> None:
        """The client has processed events up to ``sequence``."""
        self.last_activity = time.monotonic()
        if self.acked is None or sequence > self.acked:
            self.acked = sequence
            while self._unacked and self._unacked[0] <= sequence:
                self._unacked.popleft()
            self._acked.set()

    def _put(self, event: message_pb2.StreamEvent) -> None:
        if event.sequence > self.cursor:
            self.outbox.put(event)
            self.cursor = event.sequence

    async def feed(self, after: int) -> None:
        """Fill the outbox with the session's events after ``after``, until cancelled."""
        queue = self.rt.hub.subscribe(self.key)
        self.cursor = after
        try:
            await self._catch_up()
            while True:
                if cancelling():  # a library swallowed the request: honour it here
                    raise asyncio.CancelledError
                try:
                    await self._follow(queue)
                except RedisError:
                    if cancelling():
                        raise asyncio.CancelledError from None
                    _log.warning("session feed: Valkey failed; retrying", exc_info=True)
                    await asyncio.sleep(self.rt.limits.poll_s)
        finally:
            self.rt.hub.unsubscribe(self.key, queue)

    async def _catch_up(self) -> None:
        for event in await self.rt.sessions.replay(*self.key, self.cursor):
            self._put(event)

    async def _follow(self, queue: asyncio.Queue[message_pb2.StreamEvent]) -> None:
        sessions, answers, poll_s = self.rt.sessions, self.rt.answers, self.rt.limits.poll_s
        if answers.local(self.key) or not queue.empty():
            self._quiet_s = poll_s
            self._nudged = await self._from_hub(queue, poll_s) is NUDGE
        elif await sessions.waiting(*self.key):
            # Answered elsewhere, or by nobody since an instance died: take it over. Not
            # right after a nudge: the instance that queued the message is taking it.
            self._quiet_s = poll_s
            if not self._nudged:
                answers.ensure(self.key)
            self._nudged = False
            for event in await sessions.tail(*self.key, self.cursor, int(poll_s * 1000)):
                self._put(event)
        else:
            # Nothing is being answered: pick up what another instance logged last, then
            # wait for this instance's next answer or a nudge, longer each quiet round.
            before = self.cursor
            await self._catch_up()
            heard = await self._from_hub(queue, self._quiet_s)
            self._nudged = heard is NUDGE
            if heard is not None or self.cursor != before:
                self._quiet_s = poll_s
            else:
                self._quiet_s = min(2 * self._quiet_s, IDLE_BACKOFF * poll_s)

    async def _from_hub(
        self, queue: asyncio.Queue[message_pb2.StreamEvent], wait_s: float
    ) -> message_pb2.StreamEvent | None:
        """The next event (or nudge) from this instance, waiting ``wait_s``; None: none came."""
        try:
            # Not wait_for: on 3.11 it swallows a cancellation that meets a ready result,
            # and a feed that missed its cancellation would keep its stream open forever.
            async with asyncio.timeout(wait_s):
                event = await queue.get()
        except TimeoutError:
            return None
        if event.sequence > self.cursor + 1:
            # Published before this feed subscribed yet after its replay: read the gap.
            for missed in await self.rt.sessions.replay(*self.key, self.cursor, event.sequence - 1):
                self._put(missed)
        self._put(event)
        return event

    async def write(self, send: Write, done: Callable[[message_pb2.StreamEvent], bool]) -> None:
        """Send outbox events until ``done(event)`` after a sent one, or the session ends."""
        limits = self.rt.limits
        while True:
            event = await self.outbox.get(limits.heartbeat_s)
            if event is None:
                if await self._tick(send):
                    return
                continue
            self.sending = True
            try:
                await self._window(send)
                await send(event)
                if self.acked is not None:
                    self._unacked.append(event.sequence)
            finally:
                self.sending = False
            if done(event):
                return

    async def _window(self, send: Write) -> None:
        """Wait while an acknowledging client holds ``ack_window`` unacknowledged events."""
        window = self.rt.limits.ack_window
        while self.acked is not None and len(self._unacked) >= window:
            self._acked.clear()
            try:
                async with asyncio.timeout(self.rt.limits.heartbeat_s):
                    await self._acked.wait()
            except TimeoutError:
                await self._tick(send)

    async def _tick(self, send: Write) -> bool:
        """Nothing to send for a while: heartbeat, keep the slot; True when idle too long."""
        await self.rt.sessions.take_slot(self.key[0], self.id, *self._slot())
        idle = time.monotonic() - self.last_activity
        if idle > self.rt.limits.idle_timeout_s and not await self.rt.sessions.waiting(*self.key):
            expired = errors.DeadlineExceeded(
                f"the session was idle for {int(idle)} s",
                reason=errors_pb2.ERROR_REASON_TIMEOUT,
                metadata={"idle_timeout_s": str(self.rt.limits.idle_timeout_s)},
            )
            await send(message_pb2.StreamEvent(session_id=self.key[1], error=expired.to_spec()))
            return True
        await send(heartbeat_for(self.key[1]))
        return False

    async def drained(self) -> bool:
        """Whether everything the session has logged was sent and no answer is owed."""
        if self.sending or len(self.outbox) or await self.rt.sessions.waiting(*self.key):
            return False
        return self.cursor >= await self.rt.sessions.last_sequence(*self.key)


def heartbeat_for(session_id: str) -> message_pb2.StreamEvent:
    """A heartbeat event for ``session_id``."""
    event = heartbeat()
    event.session_id = session_id
    return event


def terminal_after(sequence: int, count: int) -> Callable[[message_pb2.StreamEvent], bool]:
    """A ``done`` test: true at the ``count``-th terminal event after ``sequence``."""
    seen = 0

    def done(event: message_pb2.StreamEvent) -> bool:
        nonlocal seen
        if is_terminal(event) and event.sequence > sequence:
            seen += 1
        return seen >= count

    return done
