"""Durable runs: SIGKILL a dedicated orchestrator at random points in 50+ runs.

Every run must end SUCCEEDED or COMPENSATED, with no duplicate charge, order or email,
counted in the third-party sandboxes and the orders table.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Iterator

import aiohttp
import asyncpg
import grpc
import pytest

from services.kit import context
from services.kit.devstack import Platform
from supportmesh.orchestrator.v1 import orchestrator_service_pb2 as pb
from supportmesh.orchestrator.v1 import orchestrator_service_pb2_grpc as pb_grpc
from tests.integration.edge import provision
from tests.integration.orchestrator.process import Orchestrator

RUNS = 60
KILLS = 12
FINAL = (pb.RUN_STATUS_SUCCEEDED, pb.RUN_STATUS_COMPENSATED)


@pytest.fixture
def orchestrator(platform: Platform) -> Iterator[Orchestrator]:
    log = platform.state_dir / "logs" / "orchestrator-chaos.log"
    started = Orchestrator(
        platform, log, {"ORCHESTRATOR_LEASE_S": "1.5", "ORCHESTRATOR_RECOVERY_EVERY_S": "0.3"}
    )
    try:
        yield started
    finally:
        started.kill()


async def _send(stub: pb_grpc.OrchestratorServiceAsyncStub, tenant: str, i: int) -> None:
    declined = i % 5 == 0
    request = pb.SendChatMessageRequest(
        message="I want to buy a mug", tenant_id=tenant, user_id=f"chaos-{i}",
        request_id=f"chaos-{i}",
    )  # fmt: skip
    request.context.update(
        {
            "intent": "order", "email": f"chaos-{i}@{tenant}.example", "currency": "USD",
            "payment_method": "tok_chargeDeclined" if declined else "tok_visa",
            "items": [{"sku": "mug", "quantity": 1, "unit_price_cents": 1000 + i}],
        }
    )  # fmt: skip
    await stub.SendChatMessage(request, metadata=((context.TENANT_KEY, tenant),), timeout=20)


async def _accepted(orchestrator: Orchestrator, tenant: str, i: int) -> None:
    """Send run ``i`` until the orchestrator has it (a kill may cut the call)."""
    while True:
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
                await _send(pb_grpc.OrchestratorServiceStub(channel), tenant, i)
            return
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.2)


async def _diagnose(admin_db: asyncpg.Connection, tenant: str, i: int) -> str:
    row = await admin_db.fetchrow(
        "SELECT run_id, status, lease_owner, lease_until, now() AS now FROM app.agent_runs "
        "WHERE tenant_id = $1 AND user_id = $2", tenant, f"chaos-{i}",
    )  # fmt: skip
    assert row is not None
    thread = f"{tenant}:{row['run_id']}"
    checkpoints = await admin_db.fetch(
        "SELECT checkpoint_id, metadata::text FROM checkpoints.checkpoints WHERE thread_id = $1 "
        "ORDER BY checkpoint_id", thread,
    )  # fmt: skip
    writes = await admin_db.fetch(
        "SELECT checkpoint_id, task_id, channel FROM checkpoints.checkpoint_writes "
        "WHERE thread_id = $1", thread,
    )  # fmt: skip
    return f"run {i}: {dict(row)}\n" + "\n".join(
        [str(dict(c))[:300] for c in checkpoints] + [str(dict(w)) for w in writes]
    )


@pytest.mark.timeout(600)
async def test_killed_orchestrators_never_lose_or_repeat_a_side_effect(
    platform: Platform, orchestrator: Orchestrator, admin_db: asyncpg.Connection
) -> None:
    tenant = await provision.create_tenant(platform)
    rng = random.Random(7)
    await orchestrator.start()
    pending = [asyncio.create_task(_accepted(orchestrator, tenant, i)) for i in range(RUNS)]
    while orchestrator.kills < KILLS and not all(task.done() for task in pending):
        await asyncio.sleep(rng.uniform(0.1, 1.5))
        orchestrator.kill()
        await orchestrator.start()
    await asyncio.gather(*pending)

    statuses: dict[str, pb.RunStatus.ValueType] = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{orchestrator.port}") as channel:
        stub = pb_grpc.OrchestratorServiceStub(channel)
        for _ in range(600):
            listed = await stub.ListRuns(
                pb.ListRunsRequest(parent=f"tenants/{tenant}", page_size=1000),
                metadata=((context.TENANT_KEY, tenant),), timeout=10,
            )  # fmt: skip
            statuses = {run.user_id: run.status for run in listed.runs}
            if len(statuses) == RUNS and all(s in FINAL for s in statuses.values()):
                break
            await asyncio.sleep(0.2)
    assert len(statuses) == RUNS
    # A run may also end compensated when recovery ate its wall budget; never anything else.
    for i in range(RUNS):
        status = statuses[f"chaos-{i}"]
        assert status in FINAL, await _diagnose(admin_db, tenant, i)
        if i % 5 == 0:
            assert status == pb.RUN_STATUS_COMPENSATED, i
    undone = {user for user, status in statuses.items() if status == pb.RUN_STATUS_COMPENSATED}

    orders = await admin_db.fetch(
        "SELECT customer_id, status FROM app.orders WHERE tenant_id = $1", tenant
    )
    assert Counter(row["customer_id"] for row in orders) == {f"chaos-{i}": 1 for i in range(RUNS)}
    for row in orders:
        assert (row["status"] == "CANCELLED") == (row["customer_id"] in undone)
    payment = platform.third_party_env["ORCHESTRATOR_PAYMENT_URL"]
    mail = f"http://127.0.0.1:{platform.ports['mail_http']}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{payment}/_sandbox/ledger") as response:
            ledger = await response.json()
        async with http.get(f"{mail}/messages") as response:
            mails = (await response.json())["messages"]
    charges = [c for c in ledger["charges"] if c["customer"].startswith("chaos-")]
    assert all(n == 1 for n in Counter(c["customer"] for c in charges).values())  # never twice
    refunds = Counter(r["charge"] for r in ledger["refunds"])
    for charge in charges:
        owed = charge["customer"] in undone and charge["status"] == "succeeded"
        assert refunds[charge["id"]] == (1 if owed else 0), charge  # never lost, never twice
    for i in range(RUNS):
        box = [m for m in mails if m["to"] == f"chaos-{i}@{tenant}.example"]
        sent = [m for m in box if "cancelled" not in m["subject"]]
        cancelled = [m for m in box if "cancelled" in m["subject"]]
        assert len(sent) <= 1
        if f"chaos-{i}" in undone:
            assert len(cancelled) == len(sent)
        else:
            assert (len(sent), len(cancelled)) == (1, 0)
