"""Run outcomes from JetStream update the bandit once, duplicates and redeliveries included."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from services.kit import events
from services.router import outcomes
from services.router.store import TenantState
from supportmesh.events.v1 import events_pb2
from supportmesh.orchestrator.v1 import orchestrator_service_pb2 as orchestrator_pb
from supportmesh.router.v1 import router_service_pb2 as pb
from tests.integration.router.conftest import Harness, as_tenant


@pytest.fixture
async def js(router: Harness) -> AsyncIterator[JetStreamContext]:
    client, context = await events.connect(router.platform.nats_url)
    yield context
    await client.close()


async def completed_run(
    router: Harness, tenant: str
) -> tuple[pb.DecideResponse, events_pb2.RunEvent]:
    request = pb.DecideRequest(query="Where is my order #40044?", tenant_id=tenant)
    decision = await router.stub.Decide(request, timeout=5, metadata=as_tenant(tenant))
    event = events_pb2.RunEvent(
        tenant_id=tenant, run_id=uuid.uuid4().hex, workflow="tracking",
        status=orchestrator_pb.RUN_STATUS_SUCCEEDED, tier=decision.tier,
        decision_id=decision.decision_id, cost_usd=0.0001, latency_ms=210,
        validators_passed=True,
    )  # fmt: skip
    return decision, event


async def trials(router: Harness, tenant: str, tier: int) -> float:
    state: TenantState = await router.app.router.store.tenant_state(tenant)  # type: ignore[union-attr]
    arm = state.arms.get(tier)
    return 0.0 if arm is None else arm.trials


async def wait_for_trials(router: Harness, tenant: str, tier: int, timeout_s: float = 15) -> float:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while (found := await trials(router, tenant, tier)) == 0:
        assert asyncio.get_running_loop().time() < deadline, "the outcome was never applied"
        await asyncio.sleep(0.1)
    return found


async def test_a_republished_run_outcome_counts_once(router: Harness, js: JetStreamContext) -> None:
    tenant = await router.tenant()
    decision, event = await completed_run(router, tenant)
    # Two copies under different message ids, as a publisher retrying after the dedupe
    # window would produce: JetStream stores both, the router must apply one.
    await events.publish(js, events.AGENT_RUN_COMPLETED, event, f"{event.run_id}:a")
    await events.publish(js, events.AGENT_RUN_COMPLETED, event, f"{event.run_id}:b")
    assert await wait_for_trials(router, tenant, decision.tier) == 1
    # Give the second copy time to be consumed before looking again.
    await asyncio.sleep(2.0)
    assert await trials(router, tenant, decision.tier) == 1


async def test_a_run_whose_answer_a_judge_scored_low_teaches_a_failure(
    router: Harness, js: JetStreamContext
) -> None:
    tenant = await router.tenant()
    decision, event = await completed_run(router, tenant)
    event.judge_score = 0.1
    await events.publish(js, events.AGENT_RUN_COMPLETED, event, event.run_id)
    assert await wait_for_trials(router, tenant, decision.tier) == 1
    state: TenantState = await router.app.router.store.tenant_state(tenant)  # type: ignore[union-attr]
    # The run succeeded, but its judge's score is below the threshold: a failure.
    assert state.arms[decision.tier].successes == 0


async def test_a_redelivered_run_outcome_counts_once(router: Harness, js: JetStreamContext) -> None:
    tenant = await router.tenant()
    decision, event = await completed_run(router, tenant)
    durable = f"router-outcomes-redelivery-{uuid.uuid4().hex[:8]}"
    spec = events.ConsumerSpec(
        "AGENT_RUNS", durable, (events.AGENT_RUN_COMPLETED,), backoff_s=(0.1, 0.2, 0.3)
    )
    await events.declare(js, streams=(), consumers=(spec,))
    handle = outcomes.handler(router.app.router)
    deliveries: list[int] = []

    async def applies_then_loses_the_ack(msg: Msg) -> None:
        await handle(msg)
        if events_pb2.RunEvent.FromString(msg.data).run_id == event.run_id:
            deliveries.append(msg.metadata.num_delivered)
            if len(deliveries) == 1:
                raise ConnectionError("ack lost after the outcome was applied")

    consumer = events.Consumer(js, spec, applies_then_loses_the_ack)
    await consumer.start()
    try:
        await events.publish(js, events.AGENT_RUN_COMPLETED, event, event.run_id)
        deadline = asyncio.get_running_loop().time() + 15
        while len(deliveries) < 2:
            assert asyncio.get_running_loop().time() < deadline, deliveries
            await asyncio.sleep(0.05)
    finally:
        await consumer.stop()
        await js.delete_consumer("AGENT_RUNS", durable)
    assert deliveries[:2] == [1, 2]
    assert await trials(router, tenant, decision.tier) == 1


def test_events_without_a_decision_or_final_status_teach_nothing() -> None:
    assert outcomes.report_of(events_pb2.RunEvent(run_id="r")) is None
    running = events_pb2.RunEvent(
        run_id="r", decision_id="d", status=orchestrator_pb.RUN_STATUS_RUNNING
    )
    assert outcomes.report_of(running) is None
    failed = events_pb2.RunEvent(
        tenant_id="t", run_id="r", decision_id="d", status=orchestrator_pb.RUN_STATUS_FAILED
    )
    report = outcomes.report_of(failed)
    assert report is not None
    assert not report.success
    assert report.idempotency_key == "run:t:r"
