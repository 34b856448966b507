"""Rate limits and quotas at the edge: exact token buckets under a concurrent burst, a usable
Retry-After, other tenants unaffected, and monthly quotas refused with QUOTA_EXCEEDED."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import asyncpg
import pytest
from redis.asyncio import Redis

from services.kit import quota
from services.kit.devstack import Platform
from tests.integration.edge import provision
from tests.integration.edge.conftest import TRANSPORTS, Edge, Outcome, api_key

pytestmark = pytest.mark.parametrize("transport", TRANSPORTS)
LIMIT = 10
# A plan of our own with a small tenant limit, so a burst can exceed it.
SMALL_PLAN = "edge-test-small"


def assert_rate_limited(outcome: Outcome, transport: str) -> None:
    assert (outcome.http, outcome.code, outcome.reason) == (429, 8, "RATE_LIMITED"), outcome
    assert outcome.retry_after is not None, outcome
    assert outcome.retry_after.isdigit(), outcome
    assert int(outcome.retry_after) >= 1
    if transport == "grpc":
        assert outcome.retry_delay_s is not None
        assert outcome.retry_delay_s >= 1


async def burst(edge: Edge, transport: str, headers: list[dict[str, str]]) -> list[Outcome]:
    return list(await asyncio.gather(*(edge.decide(transport, h) for h in headers)))


async def test_key_limit_admits_exactly_n_of_a_double_burst(
    edge: Edge, platform: Platform, tenant: str, transport: str
) -> None:
    key = await provision.create_key(platform, tenant, requests_per_minute=LIMIT)
    outcomes = await burst(edge, transport, [api_key(key)] * (2 * LIMIT))
    assert Counter(o.http for o in outcomes) == {200: LIMIT, 429: LIMIT}, outcomes
    limited = [o for o in outcomes if o.http == 429]
    for outcome in limited:
        assert_rate_limited(outcome, transport)
    # Other keys of the tenant and other tenants are not charged for this key's burst.
    sibling = await provision.create_key(platform, tenant)
    assert (await edge.decide(transport, api_key(sibling))).http == 200
    stranger = await provision.create_key(platform, await provision.create_tenant(platform))
    assert (await edge.decide(transport, api_key(stranger))).http == 200
    # Waiting as told is enough for the next request.
    await asyncio.sleep(max(int(o.retry_after or "1") for o in limited))
    assert (await edge.decide(transport, api_key(key))).http == 200


async def test_tenant_limit_is_shared_by_its_keys(
    edge: Edge, platform: Platform, admin_db: asyncpg.Connection, transport: str
) -> None:
    limits = {"requestsPerMinute": LIMIT, "tokensPerMonth": "0", "costPerMonthUsd": 0}
    await admin_db.execute(
        "INSERT INTO app.plans (plan_id, display_name, limits, pricing) "
        "VALUES ($1, 'Small', $2::jsonb, '{}') ON CONFLICT (plan_id) DO NOTHING",
        SMALL_PLAN,
        json.dumps(limits),
    )
    tenant = await provision.create_tenant(platform, plan=f"plans/{SMALL_PLAN}")
    first, second = [await provision.create_key(platform, tenant) for _ in range(2)]
    outcomes = await burst(edge, transport, [api_key(first), api_key(second)] * LIMIT)
    assert Counter(o.http for o in outcomes) == {200: LIMIT, 429: LIMIT}, outcomes
    for outcome in outcomes:
        if outcome.http == 429:
            assert_rate_limited(outcome, transport)
    neighbour = await provision.create_key(platform, await provision.create_tenant(platform))
    assert (await edge.decide(transport, api_key(neighbour))).http == 200


@pytest.mark.parametrize(
    ("tokens", "cost_usd"), [(20_000_000, 0.0), (0, 500.0)], ids=["tokens", "cost"]
)
async def test_quota_exceeded(
    edge: Edge,
    platform: Platform,
    redis: Redis,
    key: provision.Key,
    transport: str,
    tokens: int,
    cost_usd: float,
) -> None:
    # The pro plan allows 20M tokens and 500 USD a month.
    await quota.record_usage(redis, key.tenant, tokens // 2, cost_usd / 2)
    assert (await edge.decide(transport, api_key(key))).http == 200
    await quota.record_usage(redis, key.tenant, tokens - tokens // 2, cost_usd - cost_usd / 2)
    outcome = await edge.decide(transport, api_key(key))
    assert (outcome.http, outcome.code, outcome.reason) == (429, 8, "QUOTA_EXCEEDED"), outcome
    assert outcome.retry_after is not None
    assert int(outcome.retry_after) >= 1
    other = await provision.create_key(platform, await provision.create_tenant(platform))
    assert (await edge.decide(transport, api_key(other))).http == 200
