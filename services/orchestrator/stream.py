"""Live events of the runs this process drives, and the safe points where a run can be stopped.

:class:`RunHub` is the per-run event hub StreamRun reads: the model port publishes token
deltas and the tool port publishes tool events, keyed by the call's run id. While a run is
driven here its hub keeps a bounded history, so a subscriber that attaches late (a retried
StreamRun) gets what it missed; the history is dropped ``linger_s`` after the run ends.
Memory stays bounded: past ``max_events`` buffered events, further token deltas are merged
into the last one (``coalesced``) instead of being appended, both in the history and in a
slow subscriber's queue, so a client that does not read never slows the run down.

A cancelled run stops at a *safe point*: every port call checks :func:`halt_point` before
it starts, so a call already under way (a charge at the payment provider) finishes and is
checkpointed, and the next one raises :class:`RunCancelled` instead of starting.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from services.orchestrator.workflow import ToolEvent
from supportmesh.spec.v1 import message_pb2

Event = message_pb2.TokenDelta | message_pb2.ToolEvent


class RunCancelled(asyncio.CancelledError):
    """The run was asked to stop; raised at the next safe point of the task driving it."""


@dataclass
class Drive:
    """One task driving a run in this process; ``halted`` asks it to stop at a safe point."""

    run_id: str
    halted: bool = False


_DRIVE: contextvars.ContextVar[Drive | None] = contextvars.ContextVar(
    "supportmesh_run_drive", default=None
)


def drive(current: Drive) -> None:
    """Mark the calling task (and the tasks it starts) as driving ``current``'s run."""
    _DRIVE.set(current)


def halt_point() -> None:
    """A safe point: raise :class:`RunCancelled` if the task driving this run was halted."""
    current = _DRIVE.get()
    if current is not None and current.halted:
        raise RunCancelled(f"run {current.run_id} was cancelled")


def _add(queue: deque[Event], event: Event, limit: int) -> None:
    """Append ``event``; past ``limit``, a token delta merges into a trailing one."""
    last = queue[-1] if queue else None
    if (
        len(queue) >= limit
        and isinstance(event, message_pb2.TokenDelta)
        and isinstance(last, message_pb2.TokenDelta)
    ):
        queue[-1] = message_pb2.TokenDelta(text=last.text + event.text, coalesced=True)
        return
    queue.append(event)


class Subscription:
    """One reader of a run's events: what it missed first, then live ones until the run ends."""

    def __init__(self, hub: RunHub, run_id: str, history: deque[Event], ended: bool) -> None:
        """Start from ``history``; ``ended`` when the run already ended."""
        self._hub, self._run_id = hub, run_id
        self._pending = history
        self._ended = ended
        self._wake = asyncio.Event()

    def push(self, event: Event, limit: int) -> None:
        """Queue a live event (merging deltas when the reader falls behind)."""
        _add(self._pending, event, limit)
        self._wake.set()

    def end(self) -> None:
        """No more events: the reader stops once it has read the queued ones."""
        self._ended = True
        self._wake.set()

    def close(self) -> None:
        """Stop reading (the run goes on)."""
        self._hub.leave(self._run_id, self)
        self.end()

    def __aiter__(self) -> Subscription:
        """Iterate over the events."""
        return self

    async def __anext__(self) -> Event:
        """The next event, waiting for one while the run goes on."""
        while not self._pending:
            if self._ended:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()
        return self._pending.popleft()


@dataclass
class _Live:
    history: deque[Event] = field(default_factory=deque)
    readers: set[Subscription] = field(default_factory=set)
    ended: bool = False
    drop: asyncio.TimerHandle | None = None


class RunHub:
    """Per-run event buffers and subscribers for the runs driven in this process."""

    def __init__(
        self, *, max_events: int = 512, linger_s: float = 10.0, max_lingering: int = 1000
    ) -> None:
        """Buffer up to ``max_events`` per run; keep an ended run's for ``linger_s``."""
        self.max_events, self.linger_s, self.max_lingering = max_events, linger_s, max_lingering
        self._runs: dict[str, _Live] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, run_id: object) -> bool:
        """Whether the hub holds events of ``run_id``."""
        return run_id in self._runs

    def open(self, run_id: str) -> None:
        """Start buffering ``run_id``'s events (again, when it is resumed or cancelled)."""
        live = self._runs.setdefault(run_id, _Live())
        if live.drop is not None:
            live.drop.cancel()
            live.drop = None
        live.ended = False
        self._ended.pop(run_id, None)

    def publish(self, run_id: str, event: Event) -> None:
        """Record ``event`` and hand it to the run's readers; ignored for runs not driven here."""
        live = self._runs.get(run_id)
        if live is None or live.ended:
            return
        _add(live.history, event, self.max_events)
        for reader in live.readers:
            reader.push(event, self.max_events)

    def finish(self, run_id: str) -> None:
        """The run ended or paused: end its readers and drop its history after ``linger_s``."""
        live = self._runs.get(run_id)
        if live is None or live.ended:
            return
        live.ended = True
        for reader in live.readers:
            reader.end()
        live.readers.clear()
        live.drop = asyncio.get_running_loop().call_later(self.linger_s, self._drop, run_id)
        self._ended[run_id] = None
        while len(self._ended) > self.max_lingering:
            self._drop(next(iter(self._ended)))

    def subscribe(self, run_id: str) -> Subscription | None:
        """Read ``run_id``'s events from its first; None when the hub does not hold the run."""
        live = self._runs.get(run_id)
        if live is None:
            return None
        reader = Subscription(self, run_id, deque(live.history), live.ended)
        if not live.ended:
            live.readers.add(reader)
        return reader

    def leave(self, run_id: str, reader: Subscription) -> None:
        """Forget a reader that stopped reading."""
        live = self._runs.get(run_id)
        if live is not None:
            live.readers.discard(reader)

    def _drop(self, run_id: str) -> None:
        live = self._runs.get(run_id)
        if live is not None and live.ended:
            if live.drop is not None:
                live.drop.cancel()
            del self._runs[run_id]
        self._ended.pop(run_id, None)


_PHASES = {
    "requested": message_pb2.TOOL_EVENT_PHASE_REQUESTED,
    "succeeded": message_pb2.TOOL_EVENT_PHASE_SUCCEEDED,
    "failed": message_pb2.TOOL_EVENT_PHASE_FAILED,
    "compensated": message_pb2.TOOL_EVENT_PHASE_COMPENSATED,
}
# What a customer is told a tool does: fixed phrases, so no argument (an email, a card) leaks.
_ACTIONS = {
    "knowledge.search": "Searching the help center",
    "orders.create": "Placing the order",
    "orders.get": "Looking up the order",
    "orders.cancel": "Cancelling the order",
    "payment.charge": "Taking the payment",
    "payment.capture": "Capturing the payment",
    "payment.refund": "Refunding the payment",
    "crm.create_lead": "Recording your details",
    "crm.update_lead_status": "Updating your request",
    "crm.revert_lead_status": "Reverting your request",
    "mail.send": "Sending an email",
    "mail.send_cancellation": "Sending a cancellation email",
}
_OUTCOMES = {"requested": "", "succeeded": ": done", "failed": ": failed", "compensated": ": done"}


def tool_event(event: ToolEvent) -> message_pb2.ToolEvent:
    """A tool call's progress as the customer may see it: tool, step, phase and a summary."""
    action = _ACTIONS.get(event.tool, "Working on your request")
    if event.compensates:
        action += " to undo an earlier step"
    return message_pb2.ToolEvent(
        tool=event.tool,
        step_id=event.step_id,
        phase=_PHASES[event.phase],
        summary=action + _OUTCOMES[event.phase],
    )
