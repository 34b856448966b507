"""The outbox relay's schedule: commits of one moment share one read of the outbox."""

from __future__ import annotations

import asyncio
from typing import Any

from services.orchestrator.outbox import Relay


class _Counting(Relay):
    """A relay whose reads are counted instead of made (what a read does is tested elsewhere)."""

    def __init__(self, **timing: Any) -> None:
        super().__init__(engine=None, js=None, **timing)  # type: ignore[arg-type]
        self.reads = 0

    async def flush(self) -> int:
        self.reads += 1
        return 0


async def _reads_after(relay: _Counting, wakes: int, wait_s: float) -> int:
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.sleep(0.05)  # the read at start
        before = relay.reads
        for _ in range(wakes):  # commits a few milliseconds apart (a run's start, tool, end)
            relay.wake()
            await asyncio.sleep(0.005)
        await asyncio.sleep(wait_s)
        return relay.reads - before
    finally:
        task.cancel()


async def test_wakes_of_one_moment_share_one_read() -> None:
    relay = _Counting(poll_s=60.0, settle_s=0.5)
    assert await _reads_after(relay, wakes=3, wait_s=1.0) == 1


async def test_without_settling_each_wake_is_a_read() -> None:
    relay = _Counting(poll_s=60.0, settle_s=0.0)
    assert await _reads_after(relay, wakes=3, wait_s=0.2) == 3


async def test_without_a_wake_the_relay_polls() -> None:
    relay = _Counting(poll_s=0.05, settle_s=0.0)
    assert await _reads_after(relay, wakes=0, wait_s=0.5) >= 2


async def test_a_relay_cancelled_as_it_is_woken_stops() -> None:
    # On Python 3.11 asyncio.wait_for returns a result that is ready when the cancellation
    # arrives and drops the cancellation: the relay would carry on and its stop never end.
    relay = _Counting(poll_s=60.0, settle_s=0.0)
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(0.05)  # waiting for a wake
    relay.wake()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2.0)
    assert done == {task}
    assert task.cancelled()
