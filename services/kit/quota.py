"""Monthly plan quotas (model tokens, cost) as counters in Valkey, shared by billing and edge.

Usage is added with :func:`record_usage` as it is metered, or with :func:`record_once` when the
same usage may be reported again (a run's usage, re-applied after a crash): a per-source marker
makes the second report a no-op. :func:`check` refuses a tenant whose
counters for the current calendar month (UTC) reached a plan limit. Cost is counted in whole
micro-dollars so that concurrent increments stay exact (INCRBY, no float drift). Counter keys
carry the tenant as a hash tag, so a tenant's counters and rate buckets share a cluster slot
and one Lua script may read them all.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from redis.exceptions import NoScriptError

from services.kit import errors
from supportmesh.common.v1 import errors_pb2

if TYPE_CHECKING:
    from redis.asyncio import Redis

MICROS_PER_USD = 1_000_000
# Counters outlive their month long enough for billing to read the closing figures.
RETENTION_S = 62 * 24 * 3600
TOKENS, COST = "tokens", "cost"
# How long record_once remembers a source it counted: whoever re-reports usage must do so
# within this time (its recovery horizon), or the usage is counted twice.
MARKER_TTL_S = 8 * 24 * 3600

# KEYS: marker, tokens counter, cost counter; ARGV: tokens, cost micros, marker TTL, retention.
# The marker and the increments are one atomic step: counted together, or not at all.
ONCE_SCRIPT = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[3])) then
  local tokens = redis.call('INCRBY', KEYS[2], tonumber(ARGV[1]))
  local cost = redis.call('INCRBY', KEYS[3], tonumber(ARGV[2]))
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[4]))
  return {1, tokens, cost}
end
return {0, tonumber(redis.call('GET', KEYS[2]) or '0'), tonumber(redis.call('GET', KEYS[3]) or '0')}
"""
ONCE_SHA = hashlib.sha1(ONCE_SCRIPT.encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class Limits:
    """A plan's monthly quotas; 0 means no limit."""

    tokens_per_month: int = 0
    cost_per_month_usd: float = 0.0

    @property
    def cost_micros(self) -> int:
        """The cost limit in micro-dollars."""
        return round(self.cost_per_month_usd * MICROS_PER_USD)


@dataclass(frozen=True)
class Usage:
    """What a tenant used so far in one month."""

    tokens: int
    cost_micros: int

    @property
    def cost_usd(self) -> float:
        """The cost in US dollars."""
        return self.cost_micros / MICROS_PER_USD


def period(now: datetime | None = None) -> str:
    """The counting period of ``now`` (default: the current time), as ``YYYYMM`` in UTC."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment.year:04d}{moment.month:02d}"


def seconds_to_next_period(now: datetime | None = None) -> int:
    """Whole seconds (at least 1) until the next period starts, when quotas reset."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    start = datetime(year, month, 1, tzinfo=UTC)
    return max(1, int((start - moment).total_seconds()))


def counter_keys(tenant_id: str, now: datetime | None = None) -> tuple[str, str]:
    """The Valkey keys of the tenant's token and cost counters for ``now``'s period."""
    month = period(now)
    return (f"quota:{{{tenant_id}}}:{month}:{TOKENS}", f"quota:{{{tenant_id}}}:{month}:{COST}")


def exceeded(usage: Usage, limits: Limits) -> str | None:
    """The meter (``tokens`` or ``cost``) whose limit ``usage`` reached, if any."""
    if limits.tokens_per_month > 0 and usage.tokens >= limits.tokens_per_month:
        return TOKENS
    if limits.cost_micros > 0 and usage.cost_micros >= limits.cost_micros:
        return COST
    return None


def quota_error(meter: str, now: datetime | None = None) -> errors.ResourceExhausted:
    """The error a caller over its ``meter`` quota gets; it may retry next period."""
    return errors.ResourceExhausted(
        f"the plan's monthly {meter} quota is used up",
        reason=errors_pb2.ERROR_REASON_QUOTA_EXCEEDED,
        metadata={"meter": meter, "period": period(now)},
        retry_after_s=float(seconds_to_next_period(now)),
    )


async def record_usage(
    redis: Redis, tenant_id: str, tokens: int, cost_usd: float, *, now: datetime | None = None
) -> Usage:
    """Add metered usage to the tenant's counters and return the month's totals."""
    if tokens < 0 or cost_usd < 0:
        raise errors.InvalidArgument("usage must not be negative")
    tokens_key, cost_key = counter_keys(tenant_id, now)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incrby(tokens_key, tokens)
        pipe.incrby(cost_key, round(cost_usd * MICROS_PER_USD))
        pipe.expire(tokens_key, RETENTION_S)
        pipe.expire(cost_key, RETENTION_S)
        total_tokens, total_cost, *_ = await pipe.execute()
    return Usage(int(total_tokens), int(total_cost))


def marker_key(tenant_id: str, source_id: str) -> str:
    """The key remembering that ``source_id``'s usage was counted (the tenant's hash tag)."""
    return f"quota:{{{tenant_id}}}:counted:{source_id}"


async def record_once(
    redis: Redis,
    tenant_id: str,
    source_id: str,
    tokens: int,
    cost_usd: float,
    *,
    now: datetime | None = None,
    marker_ttl_s: int = MARKER_TTL_S,
) -> tuple[bool, Usage]:
    """Add ``source_id``'s usage unless it was added before: (whether it was added, totals).

    A repeat within ``marker_ttl_s`` changes nothing, so a caller that cannot tell whether
    its earlier attempt got through (a crash, a lost reply) may simply try again.
    """
    if tokens < 0 or cost_usd < 0:
        raise errors.InvalidArgument("usage must not be negative")
    if not source_id:
        raise errors.InvalidArgument("usage counted once needs a source id")
    keys = [marker_key(tenant_id, source_id), *counter_keys(tenant_id, now)]
    args = [tokens, round(cost_usd * MICROS_PER_USD), marker_ttl_s, RETENTION_S]
    try:
        reply = await redis.evalsha(ONCE_SHA, len(keys), *keys, *args)
    except NoScriptError:  # restart, failover or SCRIPT FLUSH: load it and try again
        await redis.script_load(ONCE_SCRIPT)
        reply = await redis.evalsha(ONCE_SHA, len(keys), *keys, *args)
    added, total_tokens, total_cost = (int(value) for value in reply)
    return bool(added), Usage(total_tokens, total_cost)


async def usage(redis: Redis, tenant_id: str, *, now: datetime | None = None) -> Usage:
    """The tenant's usage so far in ``now``'s period."""
    tokens, cost = await redis.mget(counter_keys(tenant_id, now))
    return Usage(int(tokens or 0), int(cost or 0))


async def check(
    redis: Redis, tenant_id: str, limits: Limits, *, now: datetime | None = None
) -> Usage:
    """The tenant's usage; QUOTA_EXCEEDED (RESOURCE_EXHAUSTED) once a limit is reached."""
    used = await usage(redis, tenant_id, now=now)
    meter = exceeded(used, limits)
    if meter is not None:
        raise quota_error(meter, now)
    return used
