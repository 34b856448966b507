"""JetStream declarations, de-duplication, redelivery with backoff and the dead-letter queue."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api

from services.kit import events
from services.kit.devstack import Platform
from supportmesh.events.v1 import events_pb2


@pytest.fixture
async def js(platform: Platform) -> AsyncIterator[JetStreamContext]:
    client: Client
    client, context = await events.connect(platform.nats_url)
    yield context
    await client.close()


async def test_seed_streams_and_consumers_are_declared(js: JetStreamContext) -> None:
    for spec in events.STREAMS:
        info = await js.stream_info(spec.name)
        assert info.config.storage == js_api.StorageType.FILE
        assert info.config.duplicate_window == spec.duplicate_window_s
        assert info.config.subjects == list(spec.subjects)
    dlq = await js.stream_info(events.DLQ_STREAM)
    assert dlq.config.max_age == 7 * events.DAY_S
    for consumer in events.CONSUMERS:
        info = await js.consumer_info(consumer.stream, consumer.durable)
        assert info.config.ack_policy == js_api.AckPolicy.EXPLICIT
        assert info.config.max_deliver == consumer.max_deliver
        assert info.config.backoff == list(consumer.backoff_s)
    orchestrator = await js.consumer_info("AGENT_RUNS", "orchestrator-requested")
    assert orchestrator.config.backoff == [1.0, 5.0, 25.0]
    assert orchestrator.config.max_deliver == 4


async def test_declaring_again_is_harmless(js: JetStreamContext) -> None:
    await events.declare(js)
    await events.declare(js)


async def test_same_msg_id_is_stored_once(js: JetStreamContext) -> None:
    event = events_pb2.RunEvent(tenant_id="t-1", run_id=uuid.uuid4().hex)
    msg_id = f"orchestrator:t-1:{event.run_id}:1"
    first = await events.publish(js, events.AGENT_RUN_REQUESTED, event, msg_id)
    second = await events.publish(js, events.AGENT_RUN_REQUESTED, event, msg_id)
    assert first == second


async def _dlq_messages(js: JetStreamContext, consumer: str) -> list[Msg]:
    sub = await js.pull_subscribe(f"dlq.AGENT_RUNS.{consumer}", stream=events.DLQ_STREAM)
    try:
        return await sub.fetch(10, timeout=1)
    except TimeoutError:
        return []
    finally:
        await sub.unsubscribe()


async def test_poison_event_reaches_the_dlq_after_max_deliveries(js: JetStreamContext) -> None:
    durable = f"test-poison-{uuid.uuid4().hex[:8]}"
    subject = f"agent.run.poison.{durable}"
    spec = events.ConsumerSpec("AGENT_RUNS", durable, (subject,), backoff_s=(0.1, 0.2, 0.3))
    await events.declare(js, streams=(), consumers=(spec,))
    deliveries: list[int] = []

    async def always_fails(msg: Msg) -> None:
        deliveries.append(msg.metadata.num_delivered)
        raise ValueError("cannot parse this event")

    consumer = events.Consumer(js, spec, always_fails)
    await consumer.start()
    try:
        payload = events_pb2.RunEvent(tenant_id="t-1", run_id="poison")
        await events.publish(js, subject, payload, f"poison:{durable}")
        dead: list[Msg] = []
        for _ in range(100):
            dead = await _dlq_messages(js, durable)
            if dead:
                break
            await asyncio.sleep(0.1)
    finally:
        await consumer.stop()
    assert deliveries == [1, 2, 3, 4]
    (letter,) = dead
    assert events_pb2.RunEvent.FromString(letter.data) == payload
    assert letter.headers is not None
    assert letter.headers["Dlq-Subject"] == subject
    assert letter.headers["Dlq-Consumer"] == durable
    assert letter.headers["Dlq-Deliveries"] == "4"


async def test_a_handler_that_recovers_is_acked_and_not_dead_lettered(
    js: JetStreamContext,
) -> None:
    durable = f"test-flaky-{uuid.uuid4().hex[:8]}"
    subject = f"agent.run.flaky.{durable}"
    spec = events.ConsumerSpec("AGENT_RUNS", durable, (subject,), backoff_s=(0.1, 0.2, 0.3))
    await events.declare(js, streams=(), consumers=(spec,))
    handled = asyncio.Event()
    attempts: list[int] = []

    async def fails_once(msg: Msg) -> None:
        attempts.append(msg.metadata.num_delivered)
        if len(attempts) == 1:
            raise ConnectionError("database restarting")
        handled.set()

    consumer = events.Consumer(js, spec, fails_once)
    await consumer.start()
    try:
        await events.publish(js, subject, events_pb2.RunEvent(run_id="flaky"), f"flaky:{durable}")
        await asyncio.wait_for(handled.wait(), 10)
        await asyncio.sleep(0.5)
    finally:
        await consumer.stop()
    assert attempts == [1, 2]
    info = await js.consumer_info("AGENT_RUNS", durable)
    assert info.num_ack_pending == 0
    assert info.num_pending == 0
    assert await _dlq_messages(js, durable) == []
