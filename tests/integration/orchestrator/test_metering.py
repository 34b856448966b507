"""A run's usage counts against its tenant's quotas exactly once, even after a crash.

The crash this guards against falls between the commit of a run's outcome (PostgreSQL) and
the count in Valkey: the tests commit runs exactly as ``Runs.commit`` does and stop there.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import db, errors, quota, valkey
from services.kit.devstack import Platform
from services.orchestrator import metering, record, store
from services.orchestrator.workflow import RunView
from tests.integration.edge import provision
from tests.integration.orchestrator.conftest import Client
from tests.integration.orchestrator.rpc import Rpc
from tests.integration.orchestrator.test_chat import ORDER
from tests.integration.orchestrator.test_stream import POLICY

DAY_S = 86_400.0
QUESTION = "Can items be returned within 30 days of delivery?"
TOKENS, COST_USD = 1234, 0.004321


@pytest.fixture
async def redis(platform: Platform) -> AsyncIterator[Redis]:
    """The platform's Valkey, as the orchestrator connects."""
    client = valkey.connect(platform.redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


async def committed_uncounted(engine: AsyncEngine, tenant: str, *, age_s: float = 0.0) -> str:
    """A run inserted and committed SUCCEEDED as ``Runs`` does, then "crashed": not counted.

    ``age_s`` backdates its outbox events, for a run that committed that long ago.
    """
    run_id = record.new_run_id()
    async with db.tenant_transaction(engine, tenant) as connection:
        await store.insert(
            connection, run_id=run_id, tenant_id=tenant, workflow="faq", version="1.0.0",
            input={"message": "hi"}, request_id="", session_id="", user_id="u1",
            owner="crashed", lease_s=10.0, started_at=datetime.now(UTC),
        )  # fmt: skip
        await record.started(connection, tenant, run_id, "faq", "1.0.0")
    view = RunView.of(
        {"tenant_id": tenant, "run_id": run_id, "workflow": "faq", "version": "1.0.0",
         "status": "SUCCEEDED", "tier": "SLM_A", "tokens": TOKENS, "cost_usd": COST_USD}
    )  # fmt: skip
    async with db.tenant_transaction(engine, tenant) as connection:
        await record.finished(connection, view, latency_ms=12)
        if age_s:
            await connection.execute(
                text(
                    "UPDATE app.event_outbox SET created_at = now() - make_interval(secs => :age) "
                    "WHERE event_id LIKE :run || ':%'"
                ),
                {"age": age_s, "run": run_id},
            )
    return run_id


async def metered_at(admin_db: asyncpg.Connection, run_id: str) -> datetime:
    """When the run's usage was metered (its outbox events' time): the period it counts in."""
    found: datetime = await admin_db.fetchval(
        "SELECT created_at FROM app.event_outbox WHERE event_id = $1",
        metering.event_id(run_id, "tokens"),
    )
    return found


EXPECTED = quota.Usage(TOKENS, round(COST_USD * quota.MICROS_PER_USD))


async def test_a_committed_run_left_uncounted_is_counted_once_after_a_restart(
    platform: Platform, engine: AsyncEngine, redis: Redis, admin_db: asyncpg.Connection
) -> None:
    tenant = await provision.create_tenant(platform)
    # Committed two days ago, just before the orchestrator died: no running sweep reaches
    # back that far (their horizon is a day), so nothing counts it until a restart does.
    run_id = await committed_uncounted(engine, tenant, age_s=2 * DAY_S)
    when = await metered_at(admin_db, run_id)
    await metering.Sweeper(engine, redis, horizon_s=DAY_S).sweep()
    assert await quota.usage(redis, tenant, now=when) == quota.Usage(0, 0)

    restarted = metering.Sweeper(engine, redis, horizon_s=3 * DAY_S)
    assert await restarted.sweep() >= 1
    assert await quota.usage(redis, tenant, now=when) == EXPECTED

    # Sweeping again, restarting again, and the commit path's own late count add nothing.
    assert await restarted.sweep() == 0
    await metering.Sweeper(engine, redis, horizon_s=3 * DAY_S).sweep()
    assert not await metering.count(redis, tenant, run_id, TOKENS, COST_USD, now=when)
    assert await quota.usage(redis, tenant, now=when) == EXPECTED


async def test_the_commit_and_sweeps_racing_count_a_run_once(
    platform: Platform, engine: AsyncEngine, redis: Redis, admin_db: asyncpg.Connection
) -> None:
    tenant = await provision.create_tenant(platform)
    run_id = await committed_uncounted(engine, tenant)
    when = await metered_at(admin_db, run_id)
    added = await asyncio.gather(
        metering.count(redis, tenant, run_id, TOKENS, COST_USD, now=when),
        metering.Sweeper(engine, redis).sweep(),
        metering.Sweeper(engine, redis).sweep(),
        metering.count(redis, tenant, run_id, TOKENS, COST_USD, now=when),
    )
    assert added.count(True) <= 1
    assert await quota.usage(redis, tenant, now=when) == EXPECTED


class _CountingScripts(Redis):
    """The real client, counting the scripts it runs (the quota count is one)."""

    scripts = 0

    async def evalsha(self, *args: Any, **kwargs: Any) -> Any:
        self.scripts += 1
        return await super().evalsha(*args, **kwargs)


async def test_a_sweep_runs_the_counting_script_only_for_runs_left_uncounted(
    platform: Platform, engine: AsyncEngine, redis: Redis, admin_db: asyncpg.Connection
) -> None:
    tenant = await provision.create_tenant(platform)
    counted = await committed_uncounted(engine, tenant)
    when = await metered_at(admin_db, counted)
    assert await metering.count(redis, tenant, counted, TOKENS, COST_USD, now=when)
    left = await committed_uncounted(engine, tenant)

    watched = _CountingScripts(connection_pool=redis.connection_pool)
    added = await metering.Sweeper(engine, watched).sweep()
    # The sweep re-read both runs (and any other recent one) but asked Valkey to count only
    # what had no marker: the run left uncounted, unless the platform's own sweep got there.
    assert watched.scripts == added
    assert await redis.exists(quota.marker_key(tenant, left))
    doubled = quota.Usage(2 * EXPECTED.tokens, 2 * EXPECTED.cost_micros)
    assert await quota.usage(redis, tenant, now=when) == doubled


async def test_a_chat_run_counts_its_usage_once(
    client: Client, engine: AsyncEngine, redis: Redis, admin_db: asyncpg.Connection
) -> None:
    answer = await client.chat("I want to buy two mugs", **ORDER)
    run_id = answer["runId"]
    metrics = json.loads(
        await admin_db.fetchval(
            "SELECT metrics FROM app.agent_runs WHERE run_id = $1::uuid", run_id
        )
    )
    expected = quota.Usage(metrics["tokens"], round(metrics["cost_usd"] * quota.MICROS_PER_USD))
    assert expected.tokens > 0
    when = await metered_at(admin_db, run_id)
    assert await quota.usage(redis, client.tenant, now=when) == expected
    assert await redis.exists(quota.marker_key(client.tenant, run_id))
    await metering.Sweeper(engine, redis).sweep()  # as a restarted orchestrator would
    assert await quota.usage(redis, client.tenant, now=when) == expected


async def test_record_once_adds_a_source_once(redis: Redis) -> None:
    tenant = provision.unique("q")
    added, totals = await quota.record_once(redis, tenant, "run-1", 10, 0.5)
    assert (added, totals) == (True, quota.Usage(10, 500_000))
    added, totals = await quota.record_once(redis, tenant, "run-1", 10, 0.5)
    assert (added, totals) == (False, quota.Usage(10, 500_000))
    added, totals = await quota.record_once(redis, tenant, "run-2", 5, 0.25)
    assert (added, totals) == (True, quota.Usage(15, 750_000))
    assert await redis.ttl(quota.marker_key(tenant, "run-1")) > DAY_S
    with pytest.raises(errors.InvalidArgument):
        await quota.record_once(redis, tenant, "run-3", -1, 0.0)
    with pytest.raises(errors.InvalidArgument):
        await quota.record_once(redis, tenant, "", 1, 0.0)


async def test_a_running_sweep_counts_a_run_committed_after_it_began(
    platform: Platform, engine: AsyncEngine, redis: Redis, admin_db: asyncpg.Connection
) -> None:
    # settle_s=0: the second sweep reads only rows past what the first one read.
    sweeper = metering.Sweeper(engine, redis, settle_s=0.0)
    await sweeper.sweep()
    tenant = await provision.create_tenant(platform)
    run_id = await committed_uncounted(engine, tenant)
    when = await metered_at(admin_db, run_id)
    await sweeper.sweep()
    assert await quota.usage(redis, tenant, now=when) == EXPECTED
    await sweeper.sweep()
    assert await quota.usage(redis, tenant, now=when) == EXPECTED


async def test_a_streamed_answer_ends_without_waiting_for_its_usage_count(
    client: Client, rpc: Rpc, redis: Redis
) -> None:
    # Valkey holds every write once the answer is under way, so the count (a Valkey script,
    # the orchestrator's only Valkey write) cannot happen until it is let go.
    await client.learn(POLICY)
    call = rpc.open_stream(rpc.stream_request(QUESTION, uuid.uuid4().hex))
    events = [await call.read()]
    while not events[-1].HasField("token_delta"):
        events.append(await call.read())
    await redis.client_pause(30_000, all=False)  # writes only
    try:
        while not events[-1].HasField("final_message"):
            events.append(await call.read())
        run_id = events[-1].final_message.run_id
        assert run_id, events[-1]
        assert not await redis.exists(quota.marker_key(client.tenant, run_id))
    finally:
        await redis.client_unpause()
    for _ in range(100):  # counted once Valkey takes writes again
        if await redis.exists(quota.marker_key(client.tenant, run_id)):
            break
        await asyncio.sleep(0.1)
    assert await redis.exists(quota.marker_key(client.tenant, run_id))
