"""Token leases at the edge, against the platform's real Valkey: a busy key takes tokens in
batches, a concurrent burst still admits exactly what the bucket holds (on one replica or
two), nothing is granted twice and unused tokens go back."""

from __future__ import annotations

import asyncio
import time
import uuid

from redis.asyncio import Redis

from services.edge import limits
from services.edge.limits import Budget, Limiter
from services.kit import errors, quota
from supportmesh.common.v1 import errors_pb2


class Clock:
    """A monotonic clock the test moves by hand, for lease expiry and rate windows."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingRedis(Redis):
    """The real client, counting the script calls it makes."""

    calls = 0

    async def evalsha(self, sha: str, numkeys: int, *args: str | int | float) -> object:  # type: ignore[override]
        self.calls += 1
        return await super().evalsha(sha, numkeys, *args)


def budget(key_rpm: int) -> Budget:
    return Budget(
        tenant_id=f"lease-{uuid.uuid4().hex[:8]}", key_id="k1", tenant_rpm=0,
        key_rpm=key_rpm, quotas=quota.Limits(),
    )  # fmt: skip


async def level(redis: Redis, b: Budget) -> float:
    """The key bucket's stored level, brought to Valkey's now by its refill."""
    tokens, at = await redis.hmget(limits.bucket_keys(b.tenant_id, b.key_id)[1], "tokens", "at")
    assert tokens is not None
    assert at is not None
    seconds, micros = await redis.time()
    now_ms = seconds * 1000 + micros // 1000
    return min(b.key_rpm, float(tokens) + (now_ms - int(at)) * b.key_rpm / 60_000)


async def set_level(redis: Redis, b: Budget, tokens: int) -> None:
    seconds, micros = await redis.time()
    key = limits.bucket_keys(b.tenant_id, b.key_id)[1]
    await redis.hset(key, mapping={"tokens": tokens, "at": seconds * 1000 + micros // 1000})


async def warm(limiter: Limiter, clock: Clock, b: Budget, per_second: int) -> None:
    """One second of ``per_second`` requests, so the limiter knows the key's rate."""
    for _ in range(per_second):
        await limiter.admit(b)
        clock.now += 1 / per_second
    clock.now += 0.001  # past the window's end whatever the rounding


def refill_since(started: float, b: Budget) -> float:
    """The most the key's bucket can have refilled since ``started`` (plus a millisecond)."""
    return ((time.monotonic() - started) * 1000 + 1) * b.key_rpm / 60_000


async def outcomes(limiter: Limiter, b: Budget, n: int) -> list[bool]:
    """Whether each of ``n`` concurrent requests was admitted; refusals must be rate limits."""

    async def one() -> int | None:
        try:
            await limiter.admit(b)
        except errors.ResourceExhausted as exc:
            return exc.reason
        return None

    reasons = await asyncio.gather(*(one() for _ in range(n)))
    assert set(reasons) <= {None, errors_pb2.ERROR_REASON_RATE_LIMITED}, reasons
    return [reason is None for reason in reasons]


async def test_a_busy_key_takes_tokens_in_batches_and_every_token_is_accounted(
    redis: Redis,
) -> None:
    await redis.script_load(limits.SCRIPT)  # no NOSCRIPT retry in the count
    client = CountingRedis(connection_pool=redis.connection_pool)
    clock = Clock()
    limiter = Limiter(client, clock=clock)
    b = budget(key_rpm=100_000)
    started = time.monotonic()
    await warm(limiter, clock, b, per_second=200)
    assert client.calls == 200  # no rate known yet: one call per request
    admitted = 200
    for _ in range(1000):  # 200 a second: a lease covers min(1000, 200 × LEASE_S) requests
        await limiter.admit(b)
        clock.now += 1 / 200
    admitted += 1000
    batch = 1 + int(200 * limits.LEASE_S)
    assert client.calls - 200 <= -(-1000 // (batch - 1)) + 1
    taken = b.key_rpm - await level(redis, b)
    # Whatever left the bucket was admitted or is held; refill makes up the slack.
    held = limiter.held(b.tenant_id, b.key_id)
    assert taken <= admitted + held <= taken + refill_since(started, b)


async def test_unused_tokens_go_back_with_the_next_call(redis: Redis) -> None:
    clock = Clock()
    limiter = Limiter(redis, clock=clock)
    b = budget(key_rpm=1_000)  # leases hold at most 1% of it: 10 tokens
    await warm(limiter, clock, b, per_second=200)
    await set_level(redis, b, 500)
    started = time.monotonic()
    await limiter.admit(b)
    assert limiter.held(b.tenant_id, b.key_id) == 10
    first = await level(redis, b)
    clock.now += 2 * limits.LEASE_S  # the lease expires unused
    await limiter.admit(b)
    second = await level(redis, b)
    refill = refill_since(started, b)
    # 11 left with the first call; 10 came back and 11 left with the second.
    assert 489 <= first <= 489 + refill
    assert 488 <= second <= 488 + refill
    assert limiter.held(b.tenant_id, b.key_id) == 10


async def test_a_burst_on_a_leasing_key_admits_exactly_the_bucket(redis: Redis) -> None:
    clock = Clock()
    limiter = Limiter(redis, clock=clock)
    b = budget(key_rpm=1_000)
    await warm(limiter, clock, b, per_second=200)
    await set_level(redis, b, 20)
    started = time.monotonic()
    results = await outcomes(limiter, b, 40)
    # The batch goes to the waiting requests first: nothing is left held.
    assert limiter.held(b.tenant_id, b.key_id) == 0
    assert 20 <= sum(results) <= 20 + refill_since(started, b), results


async def test_two_replicas_never_grant_more_than_the_bucket(redis: Redis) -> None:
    clocks = Clock(), Clock()
    replicas = [Limiter(redis, clock=clock) for clock in clocks]
    b = budget(key_rpm=1_000)
    for replica, clock in zip(replicas, clocks, strict=True):
        await warm(replica, clock, b, per_second=200)
    await set_level(redis, b, 30)
    started = time.monotonic()
    first, second = await asyncio.gather(*(outcomes(r, b, 30) for r in replicas))
    held = sum(r.held(b.tenant_id, b.key_id) for r in replicas)
    assert held <= 2 * 10  # at most 1% of the bucket each
    assert 30 <= sum(first) + sum(second) + held <= 30 + refill_since(started, b)
