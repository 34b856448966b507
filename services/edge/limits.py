"""Token-bucket rate limits per tenant and per key, and monthly quotas, in one Valkey script.

One EVALSHA per request decides everything atomically: Valkey runs a script alone, so
concurrent requests never both take the last token (no over-grant), and the tenant's and
the key's buckets are only charged when both have a token. Buckets hold a minute's worth
of requests and refill continuously; time is Valkey's own clock, so edge replicas with
skewed clocks share one notion of it. The script is addressed by its SHA-1; when Valkey
answers NOSCRIPT (restart, failover, SCRIPT FLUSH) it is loaded again and the call retried.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.exceptions import NoScriptError

from services.kit import errors, quota
from supportmesh.common.v1 import errors_pb2

if TYPE_CHECKING:
    from redis.asyncio import Redis

# KEYS: tenant bucket, key bucket, token counter, cost counter (one hash-tagged slot).
# ARGV: tenant rpm, key rpm (0 = none), token quota, cost quota in micro-dollars (0 = none).
# Returns {0, 0} admitted, {1, ms until a token} rate limited, {2, 1|2} token|cost quota used up.
SCRIPT = """
local token_quota = tonumber(ARGV[3])
if token_quota > 0 and tonumber(redis.call('GET', KEYS[3]) or '0') >= token_quota then
  return {2, 1}
end
local cost_quota = tonumber(ARGV[4])
if cost_quota > 0 and tonumber(redis.call('GET', KEYS[4]) or '0') >= cost_quota then
  return {2, 2}
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
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
      tokens = math.min(rpm, tokens + math.max(0, now - tonumber(state[2])) * per_ms)
    end
    levels[i] = tokens
    if tokens < 1 then
      wait = math.max(wait, math.ceil((1 - tokens) / per_ms))
    end
  end
end
if wait > 0 then
  return {1, wait}
end
for i = 1, 2 do
  if levels[i] ~= nil then
    redis.call('HSET', KEYS[i], 'tokens', tostring(levels[i] - 1), 'at', now)
    redis.call('PEXPIRE', KEYS[i], 61000)
  end
end
return {0, 0}
"""
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode(), usedforsecurity=False).hexdigest()
_METERS = {1: quota.TOKENS, 2: quota.COST}


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


class Limiter:
    """Admits or refuses requests against rate limits and quotas."""

    def __init__(self, redis: Redis) -> None:
        """Keep buckets and counters in ``redis``."""
        self._redis = redis

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
        keys = [*bucket_keys(budget.tenant_id, budget.key_id)]
        keys += quota.counter_keys(budget.tenant_id)
        args: list[int | float] = [
            max(0, budget.tenant_rpm),
            max(0, budget.key_rpm),
            max(0, budget.quotas.tokens_per_month),
            max(0, budget.quotas.cost_micros),
        ]
        verdict, detail = await self._evaluate(keys, args)
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


def _has_quota(limits: quota.Limits) -> bool:
    return limits.tokens_per_month > 0 or limits.cost_micros > 0
