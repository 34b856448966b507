"""StreamRun over native gRPC: deltas, tool events, one final message, retries, cancellation."""

from __future__ import annotations

import uuid

import asyncpg
import grpc
import pytest

from services.kit import errors
from supportmesh.orchestrator.v1 import orchestrator_service_pb2 as pb
from supportmesh.spec.v1 import message_pb2
from tests.integration.orchestrator.conftest import Client
from tests.integration.orchestrator.rpc import Rpc
from tests.integration.orchestrator.test_chat import ORDER

REQUESTED, SUCCEEDED = (
    message_pb2.TOOL_EVENT_PHASE_REQUESTED,
    message_pb2.TOOL_EVENT_PHASE_SUCCEEDED,
)
POLICY = (
    "Returns policy. Items can be returned within 30 days of delivery for a full refund. "
    "Refunds are issued to the original payment method within five business days."
)


def check_shape(events: list[message_pb2.StreamEvent], session_id: str = "session-1") -> str:
    """Sequence 1..n, the session on every event, exactly one final message, last; its text."""
    assert [event.sequence for event in events] == list(range(1, len(events) + 1))
    assert {event.session_id for event in events} == {session_id}
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds.count("final_message") == 1, kinds
    assert kinds[-1] == "final_message", kinds
    assert "error" not in kinds
    final = events[-1].final_message
    assert final.message.role == message_pb2.ROLE_ASSISTANT
    assert final.message.id == final.run_id
    return final.message.content


def deltas(events: list[message_pb2.StreamEvent]) -> list[str]:
    return [e.token_delta.text for e in events if e.WhichOneof("event") == "token_delta"]


def tools(events: list[message_pb2.StreamEvent]) -> list[tuple[str, int]]:
    return [
        (e.tool_event.tool, e.tool_event.phase)
        for e in events
        if e.WhichOneof("event") == "tool_event"
    ]


async def test_faq_streams_its_answer_with_citations(client: Client, rpc: Rpc) -> None:
    await client.learn(POLICY)
    question = "Can items be returned within 30 days of delivery?"
    request_id = uuid.uuid4().hex
    events = await rpc.stream(question, request_id)
    text = check_shape(events)
    assert "30 days" in text
    pieces = deltas(events)
    assert len(pieces) >= 2
    assert all(piece for piece in pieces)
    assert tools(events)[:2] == [("knowledge.search", REQUESTED), ("knowledge.search", SUCCEEDED)]
    final = events[-1].final_message
    assert final.citations
    assert final.citations[0].document_id
    # The same request over SendChatMessage is the same run with the same answer.
    answer = await rpc.chat(question, request_id)
    assert (answer.run_id, answer.answer.content) == (final.run_id, text)
    assert answer.status == pb.RUN_STATUS_SUCCEEDED


async def test_order_streams_tool_events_in_order_and_a_retry_replays_the_same_run(
    rpc: Rpc, admin_db: asyncpg.Connection
) -> None:
    request_id = uuid.uuid4().hex
    events = await rpc.stream("I want to buy two mugs", request_id, **ORDER)
    text = check_shape(events)
    assert "placed and paid" in text
    assert len(deltas(events)) >= 2
    assert tools(events) == [
        ("orders.create", REQUESTED), ("orders.create", SUCCEEDED),
        ("payment.charge", REQUESTED), ("payment.charge", SUCCEEDED),
        ("mail.send", REQUESTED), ("mail.send", SUCCEEDED),
    ]  # fmt: skip
    summaries = [e.tool_event.summary for e in events if e.WhichOneof("event") == "tool_event"]
    assert all(summaries)
    assert not any(ORDER["email"] in s or "@" in s or "tok_" in s for s in summaries)
    run_id = events[-1].final_message.run_id
    run = await rpc.get(run_id)
    assert (run.status, run.session_id, run.request_id) == (
        pb.RUN_STATUS_SUCCEEDED, "session-1", request_id,
    )  # fmt: skip

    again = await rpc.stream("I want to buy two mugs", request_id, **ORDER)
    assert check_shape(again) == text
    assert again[-1].final_message.run_id == run_id
    assert [r.name.rpartition("/")[2] for r in await rpc.runs()] == [run_id]  # no second run
    orders = await admin_db.fetchval(
        "SELECT count(*) FROM app.orders WHERE tenant_id = $1", rpc.tenant
    )
    assert orders == 1


async def test_a_run_waiting_for_a_human_ends_the_stream_with_the_holding_message(
    client: Client, rpc: Rpc
) -> None:
    await client.warm_up()
    events = await rpc.stream("What is your returns policy?", uuid.uuid4().hex)
    text = check_shape(events)
    run = await rpc.get(events[-1].final_message.run_id)
    assert run.status == pb.RUN_STATUS_WAITING_FOR_HUMAN
    answer = await rpc.chat("What is your returns policy?", run.request_id)
    assert answer.answer.content == text


@pytest.mark.parametrize(
    ("change", "code", "reason", "field"),
    [
        ({"message": "  "}, grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", "message"),
        ({"message": "x" * 8001}, grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", "message"),
        ({"session_id": ""}, grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", "session_id"),
        ({"request_id": ""}, grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", "request_id"),
        ({"tenant_id": "someone-else"}, grpc.StatusCode.PERMISSION_DENIED, "TENANT_MISMATCH",
         "tenant_id"),
    ],
    ids=["empty", "too-long", "no-session", "no-request-id", "other-tenant"],
)  # fmt: skip
async def test_bad_requests_are_refused_with_a_reason(
    rpc: Rpc, change: dict[str, str], code: grpc.StatusCode, reason: str, field: str
) -> None:
    request = rpc.stream_request("Hello", uuid.uuid4().hex)
    for name, value in change.items():
        setattr(request, name, value)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        _ = [event async for event in rpc.open_stream(request)]
    found = errors.parse_rpc_error(caught.value)
    assert (found.code, found.reason, found.metadata.get("field")) == (code, reason, field)
    assert await rpc.runs() == []


async def test_a_client_that_cancels_its_stream_leaves_the_run_to_finish(
    rpc: Rpc, admin_db: asyncpg.Connection
) -> None:
    request = rpc.stream_request("I want to buy two mugs", uuid.uuid4().hex, **ORDER)
    call = rpc.open_stream(request)
    first = await call.read()
    assert first.sequence == 1
    call.cancel()
    assert await call.code() == grpc.StatusCode.CANCELLED
    # The retry waits for the run the cancelled stream started; it was never stopped.
    events = await rpc.stream(request.message, request.request_id, **ORDER)
    assert "placed and paid" in check_shape(events)
    run = await rpc.get(events[-1].final_message.run_id)
    assert run.status == pb.RUN_STATUS_SUCCEEDED
    assert len(await rpc.runs()) == 1
    order = await admin_db.fetchrow(
        "SELECT status FROM app.orders WHERE tenant_id = $1", rpc.tenant
    )
    assert order is not None
    assert order["status"] != "CANCELLED"
