"""A malformed agent.run.requested reaches the DLQ through the orchestrator's consumer."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from services.kit import events
from services.kit.devstack import Platform


@pytest.mark.timeout(120)
async def test_a_malformed_run_request_is_dead_lettered(platform: Platform) -> None:
    client, js = await events.connect(platform.nats_url)
    try:
        ack = await js.publish(
            events.AGENT_RUN_REQUESTED,
            b"\xff\xff\xff\xff not a RunEvent",
            headers={"Nats-Msg-Id": f"poison-{uuid.uuid4().hex}"},
        )
        subject = "dlq.AGENT_RUNS.orchestrator-requested"
        found = None
        for _ in range(90):  # backoff 1 s + 5 s + 25 s before the fourth delivery fails
            sub = await js.pull_subscribe(subject, stream=events.DLQ_STREAM)
            try:
                batch = await sub.fetch(100, timeout=0.5)
            except TimeoutError:
                batch = []
            finally:
                await sub.unsubscribe()
            found = next(
                (m for m in batch if (m.headers or {}).get("Dlq-Sequence") == str(ack.seq)), None
            )
            if found is not None:
                break
            await asyncio.sleep(1.0)
        assert found is not None, "the poison event never reached the DLQ"
        assert found.headers is not None
        assert found.headers["Dlq-Subject"] == events.AGENT_RUN_REQUESTED
        assert found.headers["Dlq-Deliveries"] == "4"
    finally:
        await client.close()
