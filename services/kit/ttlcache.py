"""An async read-through cache with a time to live, stale-while-revalidate and single flight.

For data that is read on a hot path and changes rarely (plan limits, switches, per-tenant
state): a fresh entry is served from memory; a stale one is served too while one background
task reloads it; a missing one is loaded once however many callers wait for it. A failed
background reload keeps the stale value, so a flapping backend does not fail requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

_log = logging.getLogger("supportmesh.ttlcache")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass
class _Entry(Generic[V]):
    value: V
    loaded_at: float


class TtlCache(Generic[K, V]):
    """Cache of ``load(key)`` results; see the module docstring."""

    def __init__(
        self,
        load: Callable[[K], Awaitable[V]],
        ttl_s: float,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Cache up to ``max_entries`` results of ``load`` for ``ttl_s`` seconds each."""
        self._load = load
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._inflight: dict[K, asyncio.Future[V]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(self, key: K) -> V:
        """The cached value, reloading it in the background when stale; loads on a miss."""
        entry = self._entries.get(key)
        if entry is None:
            return await self._load_once(key)
        self._entries.move_to_end(key)
        if self._clock() - entry.loaded_at > self._ttl_s and key not in self._inflight:
            task = asyncio.create_task(self._refresh(key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return entry.value

    def peek(self, key: K) -> V | None:
        """The cached value, fresh or stale, without loading."""
        entry = self._entries.get(key)
        return None if entry is None else entry.value

    def invalidate(self, key: K) -> None:
        """Forget ``key`` so the next :meth:`get` loads it again."""
        self._entries.pop(key, None)

    async def _load_once(self, key: K) -> V:
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            value = await self._load(key)
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else must
            raise
        else:
            future.set_result(value)
            self._store(key, value)
            return value
        finally:
            self._inflight.pop(key, None)

    async def _refresh(self, key: K) -> None:
        try:
            await self._load_once(key)
        except Exception:  # noqa: BLE001 - keep serving the stale value
            _log.warning("background reload failed; serving the stale value", exc_info=True)

    def _store(self, key: K, value: V) -> None:
        self._entries[key] = _Entry(value, self._clock())
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    async def aclose(self) -> None:
        """Cancel background reloads."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
