"""A bulkhead: at most ``limit`` calls in flight per key (e.g. per tenant and tool).

Choice: a caller over the limit waits for a free slot for at most ``max_wait_s`` (0, the
default, means it does not wait) and then gets ``ResourceExhausted`` with RetryInfo. Waiting
without a bound would turn one tenant's slow dependency into queues that hold everybody's
memory and deadlines; failing fast lets the caller's own retry or budget policy decide.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from services.kit import errors


@dataclass
class _Compartment:
    """One key's slots and how many callers hold or wait for one."""

    semaphore: asyncio.Semaphore
    users: int = 0
    in_flight: int = 0


@dataclass
class Bulkhead:
    """Concurrency limit per key; see the module docstring for what happens over it."""

    name: str
    limit: int
    max_wait_s: float = 0.0
    _compartments: dict[str, _Compartment] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        """Refuse a limit below one."""
        if self.limit < 1 or self.max_wait_s < 0:
            raise ValueError("limit must be >= 1 and max_wait_s >= 0")

    def in_flight(self, key: str) -> int:
        """Calls currently holding a slot under ``key``."""
        compartment = self._compartments.get(key)
        return 0 if compartment is None else compartment.in_flight

    @asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        """Hold one of ``key``'s slots for the duration of the block."""
        compartment = self._compartments.get(key)
        if compartment is None:
            compartment = _Compartment(asyncio.Semaphore(self.limit))
            self._compartments[key] = compartment
        compartment.users += 1
        try:
            await self._acquire(compartment, key)
            compartment.in_flight += 1
            try:
                yield
            finally:
                compartment.in_flight -= 1
                compartment.semaphore.release()
        finally:
            compartment.users -= 1
            if compartment.users == 0:
                # Keys come and go with tenants: drop idle compartments instead of keeping all.
                del self._compartments[key]

    async def _acquire(self, compartment: _Compartment, key: str) -> None:
        if not compartment.semaphore.locked():
            await compartment.semaphore.acquire()
            return
        if self.max_wait_s > 0:
            try:
                async with asyncio.timeout(self.max_wait_s):
                    await compartment.semaphore.acquire()
                return
            except TimeoutError:
                pass
        raise errors.ResourceExhausted(
            f"{self.name} already has {self.limit} calls in flight for this caller",
            metadata={"bulkhead": self.name, "limit": str(self.limit), "key": key},
            retry_after_s=max(self.max_wait_s, 0.1),
        )
