"""Connection limits per tenant, idle timeouts and heartbeats."""

from __future__ import annotations

import grpc
import pytest

from services.kit import context, errors
from tests.integration.realtime.conftest import Chat, StartInstance, Tenant, mesh_metadata


async def _refused(chat: Chat) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await chat.open()
    return caught.value


async def test_a_tenant_cannot_open_more_streams_than_its_limit(
    fresh_tenant: Tenant, start_instance: StartInstance
) -> None:
    instance = await start_instance(max_connections_per_tenant=2)
    first = Chat(instance.stub, mesh_metadata(fresh_tenant))
    second = Chat(instance.stub, mesh_metadata(fresh_tenant))
    await first.open()
    await second.open()
    refused = await _refused(Chat(instance.stub, mesh_metadata(fresh_tenant)))
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    remote = errors.parse_rpc_error(refused)
    assert remote.reason == "CONNECTION_LIMIT"
    assert remote.retry_after_s is not None
    assert instance.metric("realtime_connections_refused_total", reason="CONNECTION_LIMIT") == 1

    # A closed stream frees its place at once.
    await first.call.done_writing()
    assert await first.call.read() is grpc.aio.EOF
    third = Chat(instance.stub, mesh_metadata(fresh_tenant))
    await third.open()
    assert instance.metric("ws_active_connections", rpc="Chat") == 2


async def test_the_plan_limit_the_edge_vouches_for_wins(
    fresh_tenant: Tenant, start_instance: StartInstance
) -> None:
    instance = await start_instance(max_connections_per_tenant=100)
    plan = (*mesh_metadata(fresh_tenant), (context.MAX_CONNECTIONS_KEY, "1"))
    await Chat(instance.stub, plan).open()
    refused = await _refused(Chat(instance.stub, plan))
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_an_idle_session_gets_heartbeats_then_closes(
    fresh_tenant: Tenant, start_instance: StartInstance
) -> None:
    instance = await start_instance(heartbeat_s=0.2, idle_timeout_s=1.0)
    chat = Chat(instance.stub, mesh_metadata(fresh_tenant))
    await chat.open()
    events = []
    while (event := await chat.call.read()) is not grpc.aio.EOF:
        events.append(event)
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds.count("heartbeat") >= 2
    assert all(e.sequence == 0 for e in events)
    assert kinds[-1] == "error"
    assert events[-1].error.reason == errors.reason_value("TIMEOUT")
    assert await chat.call.code() == grpc.StatusCode.OK
