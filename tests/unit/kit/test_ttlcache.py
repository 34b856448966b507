import asyncio

import pytest

from services.kit.ttlcache import TtlCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_fresh_values_come_from_memory_and_stale_ones_reload_in_the_background() -> None:
    loads: list[str] = []
    clock = Clock()

    async def load(key: str) -> str:
        loads.append(key)
        return f"{key}{len(loads)}"

    cache: TtlCache[str, str] = TtlCache(load, ttl_s=10, clock=clock)
    assert await cache.get("a") == "a1"
    assert await cache.get("a") == "a1"
    clock.now = 11
    assert await cache.get("a") == "a1"  # stale, served while reloading
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert await cache.get("a") == "a2"
    assert loads == ["a", "a"]


async def test_concurrent_misses_load_once() -> None:
    calls = 0

    async def load(key: str) -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return 42

    cache: TtlCache[str, int] = TtlCache(load, ttl_s=10)
    assert await asyncio.gather(*(cache.get("k") for _ in range(10))) == [42] * 10
    assert calls == 1


async def test_failed_reload_keeps_the_stale_value_and_a_failed_miss_raises() -> None:
    clock = Clock()
    fail = False

    async def load(key: str) -> str:
        if fail:
            raise ConnectionError("down")
        return "v"

    cache: TtlCache[str, str] = TtlCache(load, ttl_s=1, clock=clock, max_entries=1)
    assert await cache.get("a") == "v"
    fail, clock.now = True, 5
    assert await cache.get("a") == "v"
    await asyncio.sleep(0.01)
    assert cache.peek("a") == "v"
    with pytest.raises(ConnectionError):
        await cache.get("b")
    cache.invalidate("a")
    assert cache.peek("a") is None
    await cache.aclose()
