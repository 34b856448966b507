"""CancelRun: a running run stops at a safe point and is undone once; waiting and remote runs."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import grpc
import pytest

from services.kit import errors
from services.kit.devstack import Platform
from supportmesh.orchestrator.v1 import orchestrator_service_pb2 as pb
from supportmesh.spec.v1 import message_pb2
from tests.integration.orchestrator.conftest import Client
from tests.integration.orchestrator.process import Orchestrator
from tests.integration.orchestrator.rpc import Rpc, connect
from tests.integration.orchestrator.streams import tool_calls
from tests.integration.orchestrator.test_chat import ORDER
from tests.integration.orchestrator.test_stream import check_shape, tools

# The payment sandbox holds a charge from this card until the step's wall budget runs out,
# so the run is surely executing when it is cancelled.
HUNG: dict[str, Any] = {**ORDER, "payment_method": "tok_timeout"}
REASON = "The customer changed their mind."


async def _until_charging(call: Any) -> list[message_pb2.StreamEvent]:
    """Read the stream until the charge is requested."""
    seen: list[message_pb2.StreamEvent] = []
    async for event in call:
        seen.append(event)
        if (event.tool_event.tool, event.tool_event.phase) == (
            "payment.charge", message_pb2.TOOL_EVENT_PHASE_REQUESTED,
        ):  # fmt: skip
            return seen
    raise AssertionError(f"the stream ended before the charge: {seen}")


async def _refused(rpc: Rpc, run_id: str) -> errors.RemoteError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rpc.cancel(run_id, REASON)
    return errors.parse_rpc_error(caught.value)


async def test_a_running_run_is_stopped_and_its_committed_steps_undone_once(
    rpc: Rpc, platform: Platform, admin_db: asyncpg.Connection
) -> None:
    request = rpc.stream_request("I want to buy two mugs", uuid.uuid4().hex, **HUNG)
    call = rpc.open_stream(request)
    seen = await _until_charging(call)
    [listed] = await rpc.runs()
    run_id = listed.name.rpartition("/")[2]
    assert listed.status == pb.RUN_STATUS_RUNNING
    # A SendChatMessage retry of the same request waits for the run, then for its cancellation.
    waiting = asyncio.create_task(rpc.chat(request.message, request.request_id, **HUNG))

    cancelled = await rpc.cancel(run_id, REASON)
    assert cancelled.status == pb.RUN_STATUS_COMPENSATED
    assert cancelled.error.message == REASON
    answer = await waiting
    assert (answer.run_id, answer.status) == (run_id, pb.RUN_STATUS_COMPENSATED)
    events = seen + [event async for event in call]
    assert "couldn't place your order" in check_shape(events)
    assert tools(events)[-2:] == [
        ("orders.cancel", message_pb2.TOOL_EVENT_PHASE_REQUESTED),
        ("orders.cancel", message_pb2.TOOL_EVENT_PHASE_COMPENSATED),
    ]
    assert "mail.send" not in [tool for tool, _ in tools(events)]
    assert (await rpc.get(run_id)).status == pb.RUN_STATUS_COMPENSATED
    order = await admin_db.fetchrow(
        "SELECT status FROM app.orders WHERE tenant_id = $1", rpc.tenant
    )
    assert order is not None
    assert order["status"] == "CANCELLED"

    calls = await tool_calls(platform, run_id, want=6)
    outcomes = [(phase, event.tool) for phase, event in calls]
    assert outcomes.count(("succeeded", "orders.cancel")) == 1
    assert not any(tool.startswith("mail.") for _, tool in outcomes)
    refused = await _refused(rpc, run_id)
    assert (refused.code, refused.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INVALID_STATE")


async def test_a_run_waiting_for_a_human_is_cancelled_with_nothing_to_undo(
    client: Client, rpc: Rpc
) -> None:
    await client.warm_up()
    waiting = await rpc.chat("What is your returns policy?", uuid.uuid4().hex)
    assert waiting.status == pb.RUN_STATUS_WAITING_FOR_HUMAN
    cancelled = await rpc.cancel(waiting.run_id, REASON)
    assert (cancelled.status, cancelled.error.message) == (pb.RUN_STATUS_CANCELLED, REASON)
    assert not cancelled.HasField("human_input_request")


async def test_a_run_executing_in_another_instance_is_cancelled_there_and_followed_here(
    rpc: Rpc, second: Orchestrator
) -> None:
    request = rpc.stream_request("I want to buy two mugs", uuid.uuid4().hex, **HUNG)
    async with connect(second.target, rpc.tenant) as there:
        call = there.open_stream(request)
        seen = await _until_charging(call)
        [listed] = await rpc.runs()
        run_id = listed.name.rpartition("/")[2]
        # Here, the same request follows the run the other instance drives.
        following = rpc.open_stream(request)
        refused = await _refused(rpc, run_id)
        assert (refused.code, refused.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION, "INVALID_STATE",
        )  # fmt: skip
        assert "another orchestrator instance" in refused.message
        cancelled = await there.cancel(run_id, REASON)
        assert cancelled.status == pb.RUN_STATUS_COMPENSATED
        followed = [event async for event in following]
        assert len(followed) == 1
        assert "couldn't place your order" in check_shape(followed)
        assert followed[-1].final_message.run_id == run_id
        assert check_shape(seen + [event async for event in call]) == check_shape(followed)
    assert len(await rpc.runs()) == 1
