"""Token-bucket rate limits per tenant and per key, and monthly quotas, in one Valkey script.

One EVALSHA decides atomically: Valkey runs a script alone, so concurrent requests never
both take the last token (no over-grant), and the tenant's and the key's buckets are only
charged when both have tokens. Buckets hold a minute's worth of requests and refill
continuously; time is Valkey's own clock, so edge replicas with skewed clocks share one
notion of it. The script is addressed by its SHA-1; when Valkey answers NOSCRIPT (restart,
failover, SCRIPT FLUSH) it is loaded again and the call retried.

A busy key does not pay a Valkey round trip per request. Each edge replica takes tokens in
small batches (leases), the way Envoy's rate-limit quota service hands out assignments:

- One script call per (tenant, key) is in flight at a time; requests arriving meanwhile
  wait for it, and it asks for as many tokens as there are waiting requests plus what the
  key is expected to use in the next ``LEASE_S`` (its rate over the last second), capped
  at 1% of its smallest bucket (``MAX_SHARE``) and ``MAX_PREFETCH``. A key at a few
  requests a second, or on a small limit, therefore still asks per request.
- A batch is taken from the shared buckets before any of it is granted, so the buckets
  never over-grant, across any number of replicas. Under a concurrent burst on one
  replica exactly the bucket's content is admitted: refused requests are the ones for
  which Valkey had nothing left.
- Tokens not used within ``LEASE_S`` go back to the buckets with the key's next call.
  What a replica holds is at most 1% of a bucket, for at most ``LEASE_S``; a quota
  refusal or a lower plan limit reaches a busy key within that time.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.exceptions import NoScriptError

from services.kit import errors, quota
from supportmesh.common.v1 import errors_pb2

if TYPE_CHECKING:
    from redis.asyncio import Redis

# KEYS: tenant bucket, key bucket, token counter, cost counter (one hash-tagged slot).
# ARGV: tenant rpm, key rpm (0 = none), token quota, cost quota in micro-dollars (0 = none),
#       tokens wanted (>= 1), unused tokens given back.
# Returns {0, n} n tokens granted (1 <= n <= wanted), {1, ms until a token} rate limited,
# {2, 1|2} token|cost quota used up. Given-back tokens are credited in every case.
SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local back = tonumber(ARGV[6])
local grant = tonumber(ARGV[5])
local levels = {}
local wait = 0
for i = 1, 2 do
  local rpm = tonumber(ARGV[i])
  if rpm > 0 then
    local state = redis.call('HMGET', KEYS[i], 'tokens', 'at')
    local tokens = tonumber(state[1])
    local per_ms = rpm / 60000
    if tokens == nil then
      tokens = rpm
    else
      tokens = math.min(rpm, tokens + math.max(0, now - tonumber(state[2])) * per_ms + back)
    end
    levels[i] = tokens
    grant = math.min(grant, math.floor(tokens))
    if tokens < 1 then
      wait = math.max(wait, math.ceil((1 - tokens) / per_ms))
    end
  end
end
local verdict, detail = 0, grant
local token_quota = tonumber(ARGV[3])
local cost_quota = tonumber(ARGV[4])
if token_quota > 0 and tonumber(redis.call('GET', KEYS[3]) or '0') >= token_quota then
  verdict, detail = 2, 1
elseif cost_quota > 0 and tonumber(redis.call('GET', KEYS[4]) or '0') >= cost_quota then
  verdict, detail = 2, 2
elseif wait > 0 then
  verdict, detail = 1, wait
end
if verdict == 0 or back > 0 then
  local taken = verdict == 0 and grant or 0
  for i = 1, 2 do
    if levels[i] ~= nil then
      redis.call('HSET', KEYS[i], 'tokens', tostring(levels[i] - taken), 'at', now)
      redis.call('PEXPIRE', KEYS[i], 61000)
    end
  end
end
return {verdict, detail}
"""
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode(), usedforsecurity=False).hexdigest()
_METERS = {1: quota.TOKENS, 2: quota.COST}
LEASE_S = 0.1  # how long leased tokens stay usable before they go back
MAX_SHARE = 100  # a replica leases at most 1/MAX_SHARE of a bucket ahead of demand
MAX_PREFETCH = 100  # and at most this many tokens
_RATE_WINDOW_S = 1.0
_MAX_LEASES = 100_000  # bounds memory under a flood of made-up keys


@dataclass(frozen=True)
class Budget:
    """What one request is measured against."""

    tenant_id: str
    key_id: str
    tenant_rpm: int
    key_rpm: int
    quotas: quota.Limits


def bucket_keys(tenant_id: str, key_id: str) -> tuple[str, str]:
    """The Valkey keys of the tenant's and the key's buckets."""
    return f"rl:{{{tenant_id}}}:tenant", f"rl:{{{tenant_id}}}:key:{key_id}"


def retry_after_s(wait_ms: int) -> int:
    """The Retry-After value for a wait: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(wait_ms / 1000))


@dataclass
class _Lease:
    """What one replica holds for one (tenant, key): leased tokens and its recent rate."""

    tokens: int = 0
    expires: float = 0.0
    waiting: int = 0
    fetch: asyncio.Task[tuple[int, int]] | None = None
    window_start: float = 0.0
    window_count: int = 0
    rate: float = 0.0  # requests a second over the last whole window

    def count(self, now: float) -> None:
        """Note one request at ``now`` in the rate estimate."""
        elapsed = now - self.window_start
        if elapsed >= _RATE_WINDOW_S:
            self.rate = self.window_count / elapsed if elapsed < 2 * _RATE_WINDOW_S else 0.0
            self.window_start, self.window_count = now, 0
        self.window_count += 1


class Limiter:
    """Admits or refuses requests against rate limits and quotas."""

    def __init__(self, redis: Redis, *, clock: Callable[[], float] = time.monotonic) -> None:
        """Keep buckets and counters in ``redis``; ``clock`` times leases (tests pass one)."""
        self._redis = redis
        self._clock = clock
        self._leases: dict[tuple[str, str], _Lease] = {}

    async def _evaluate(self, keys: list[str], args: list[int | float]) -> list[int]:
        try:
            reply = await self._redis.evalsha(SCRIPT_SHA, len(keys), *keys, *args)
        except NoScriptError:
            await self._redis.script_load(SCRIPT)
            reply = await self._redis.evalsha(SCRIPT_SHA, len(keys), *keys, *args)
        return [int(value) for value in reply]

    async def admit(self, budget: Budget) -> None:
        """Take one token from each bucket; RESOURCE_EXHAUSTED when a limit refuses."""
        if budget.tenant_rpm <= 0 and budget.key_rpm <= 0 and not _has_quota(budget.quotas):
            return
        lease = self._lease(budget)
        lease.count(self._clock())
        while True:
            if lease.tokens > 0 and self._clock() < lease.expires:
                lease.tokens -= 1
                return
            if lease.fetch is None:
                lease.fetch = asyncio.ensure_future(self._take(lease, budget))
            lease.waiting += 1
            try:
                verdict, detail = await asyncio.shield(lease.fetch)
            finally:
                lease.waiting -= 1
            if verdict == 1:
                wait = retry_after_s(detail)
                raise errors.ResourceExhausted(
                    f"rate limit reached; retry in {wait} s",
                    reason=errors_pb2.ERROR_REASON_RATE_LIMITED,
                    metadata={"retry_after_s": str(wait)},
                    retry_after_s=float(wait),
                )
            if verdict == 2:
                raise quota.quota_error(_METERS[detail])
            # Granted: take one of the batch, unless earlier waiters took it all; then ask again.

    def held(self, tenant_id: str, key_id: str) -> int:
        """Tokens leased for the key and not used yet (expired ones until they go back)."""
        lease = self._leases.get((tenant_id, key_id))
        return lease.tokens if lease is not None else 0

    def _lease(self, budget: Budget) -> _Lease:
        identity = (budget.tenant_id, budget.key_id)
        lease = self._leases.get(identity)
        if lease is None:
            if len(self._leases) >= _MAX_LEASES:  # bound memory: keep only calls in flight
                self._leases = {k: v for k, v in self._leases.items() if v.fetch is not None}
            lease = self._leases[identity] = _Lease()
        return lease

    async def _take(self, lease: _Lease, budget: Budget) -> tuple[int, int]:
        """One script call for ``lease``'s waiting requests plus its expected use."""
        try:
            now = self._clock()
            back, lease.tokens = lease.tokens, 0  # a call only starts once they expired
            limits = [rpm for rpm in (budget.tenant_rpm, budget.key_rpm) if rpm > 0]
            cap = min(MAX_PREFETCH, min(limits) // MAX_SHARE) if limits else MAX_PREFETCH
            prefetch = min(cap, int(lease.rate * LEASE_S))
            keys = [*bucket_keys(budget.tenant_id, budget.key_id)]
            keys += quota.counter_keys(budget.tenant_id)
            args: list[int | float] = [
                max(0, budget.tenant_rpm),
                max(0, budget.key_rpm),
                max(0, budget.quotas.tokens_per_month),
                max(0, budget.quotas.cost_micros),
                max(1, lease.waiting) + prefetch,
                back,
            ]
            verdict, detail = await self._evaluate(keys, args)
            if verdict == 0:
                lease.tokens, lease.expires = detail, now + LEASE_S
            return verdict, detail
        finally:
            lease.fetch = None


def _has_quota(limits: quota.Limits) -> bool:
    return limits.tokens_per_month > 0 or limits.cost_micros > 0
