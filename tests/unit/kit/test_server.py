"""The kit's server and client interceptors, against real in-process gRPC servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.kit import context, errors
from services.kit.channels import create_channel
from services.kit.server import Service, start_server
from services.kit.settings import ServiceSettings
from services.kit.telemetry import Telemetry
from supportmesh.router.v1 import router_service_pb2 as pb
from supportmesh.router.v1 import router_service_pb2_grpc as pb_grpc

SERVICE = "supportmesh.router.v1.RouterService"


class Probe(pb_grpc.RouterServiceServicer):
    """A servicer whose behaviour is chosen by the query text."""

    def __init__(self, downstream: pb_grpc.RouterServiceAsyncStub | None = None) -> None:
        self.downstream = downstream
        self.seen: list[context.CallContext] = []

    async def Decide(self, request: pb.DecideRequest, ctx: Any) -> pb.DecideResponse:  # noqa: N802
        call = context.current()
        assert call is not None
        self.seen.append(call)
        if request.query == "boom":
            raise RuntimeError("password=hunter2 at db.internal:5432")
        if request.query == "missing":
            raise errors.NotFound("no such order", metadata={"order": "42"})
        if request.query == "abort":
            await ctx.abort(grpc.StatusCode.FAILED_PRECONDITION, "aborted on purpose")
        if request.query == "forward" and self.downstream is not None:
            return await self.downstream.Decide(pb.DecideRequest(query="leaf"), timeout=30)
        return pb.DecideResponse(reasoning=f"{call.request_id}|{call.tenant_id}")

    async def Feedback(self, request: pb.FeedbackRequest, ctx: Any) -> pb.FeedbackResponse:  # noqa: N802
        raise errors.Unimplemented("not part of the probe")


async def start(probe: Probe, telemetry: Telemetry, **overrides: Any) -> Service:
    settings = ServiceSettings(**overrides)
    return await start_server(
        settings,
        lambda s: pb_grpc.add_RouterServiceServicer_to_server(probe, s),
        [SERVICE],
        telemetry,
    )


@pytest.fixture
async def probe_service() -> AsyncIterator[tuple[Probe, Service, pb_grpc.RouterServiceAsyncStub]]:
    probe = Probe()
    service = await start(probe, Telemetry("probe"))
    channel = create_channel(f"127.0.0.1:{service.port}", ServiceSettings(), Telemetry("client"))
    yield probe, service, pb_grpc.RouterServiceStub(channel)
    await channel.close()
    await service.stop()


async def test_domain_error_becomes_status_with_error_info(probe_service: Any) -> None:
    _, _, stub = probe_service
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Decide(pb.DecideRequest(query="missing"), timeout=5)
    remote = errors.parse_rpc_error(caught.value)
    assert remote.code is grpc.StatusCode.NOT_FOUND
    assert remote.reason == "RESOURCE_NOT_FOUND"
    assert remote.metadata == {"order": "42"}
    assert remote.message == "no such order"


async def test_unknown_error_is_internal_without_internals(probe_service: Any) -> None:
    _, _, stub = probe_service
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Decide(pb.DecideRequest(query="boom"), timeout=5)
    remote = errors.parse_rpc_error(caught.value)
    assert remote.code is grpc.StatusCode.INTERNAL
    assert remote.reason == "INTERNAL"
    assert "hunter2" not in remote.message
    assert "db.internal" not in remote.message
    assert "request id" in remote.message


async def test_explicit_abort_keeps_its_status(probe_service: Any) -> None:
    _, service, stub = probe_service
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Decide(pb.DecideRequest(query="abort"), timeout=5)
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    handled = service.telemetry.registry.get_sample_value(
        "grpc_server_handled_total",
        {"grpc_service": SERVICE, "grpc_method": "Decide", "grpc_code": "FAILED_PRECONDITION"},
    )
    assert handled == 1.0


async def test_call_without_deadline_is_refused(probe_service: Any) -> None:
    _, service, _ = probe_service
    # A bare channel: no service-config default timeout, so the call carries no deadline.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        stub = pb_grpc.RouterServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Decide(pb.DecideRequest(query="hi"))
        remote = errors.parse_rpc_error(caught.value)
        assert remote.code is grpc.StatusCode.INVALID_ARGUMENT
        assert remote.reason == "DEADLINE_REQUIRED"
        # Health probes are exempt.
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_request_id_and_tenant_metadata_reach_the_handler(probe_service: Any) -> None:
    _, _, stub = probe_service
    metadata = (("x-request-id", "req-123"), ("x-supportmesh-tenant", "tenant-a"))
    reply = await stub.Decide(pb.DecideRequest(query="hi"), metadata=metadata, timeout=5)
    assert reply.reasoning == "req-123|tenant-a"
    generated = await stub.Decide(pb.DecideRequest(query="hi"), timeout=5)
    request_id, _, tenant = generated.reasoning.partition("|")
    assert len(request_id) == 32
    assert tenant == ""


async def test_metrics_count_calls_by_method_and_code(probe_service: Any) -> None:
    _, service, stub = probe_service
    for _ in range(3):
        await stub.Decide(pb.DecideRequest(query="hi"), timeout=5)
    labels = {"grpc_service": SERVICE, "grpc_method": "Decide", "grpc_code": "OK"}
    registry = service.telemetry.registry
    assert registry.get_sample_value("grpc_server_handled_total", labels) == 3.0
    assert registry.get_sample_value("grpc_server_handling_seconds_count", labels) == 3.0


async def test_trace_request_id_tenant_and_deadline_propagate_downstream() -> None:
    exporter = InMemorySpanExporter()
    leaf = Probe()
    leaf_service = await start(
        leaf, Telemetry("leaf", span_processors=(SimpleSpanProcessor(exporter),))
    )
    mid_telemetry = Telemetry("mid", span_processors=(SimpleSpanProcessor(exporter),))
    leaf_channel = create_channel(
        f"127.0.0.1:{leaf_service.port}", ServiceSettings(), mid_telemetry
    )
    mid = Probe(pb_grpc.RouterServiceStub(leaf_channel))
    mid_service = await start(mid, mid_telemetry)
    edge_channel = create_channel(
        f"127.0.0.1:{mid_service.port}", ServiceSettings(), Telemetry("edge")
    )
    try:
        stub = pb_grpc.RouterServiceStub(edge_channel)
        metadata = (("x-request-id", "req-9"), ("x-supportmesh-tenant", "tenant-b"))
        reply = await stub.Decide(pb.DecideRequest(query="forward"), metadata=metadata, timeout=2)
        assert reply.reasoning == "req-9|tenant-b"
        (leaf_call,) = leaf.seen
        # The leaf asked for 30 s but inherits what is left of the caller's 2 s.
        assert leaf_call.deadline is not None
        remaining = leaf_call.deadline - asyncio.get_running_loop().time()
        assert remaining < 2.5
        await asyncio.sleep(0.05)
        spans = exporter.get_finished_spans()
        server_spans = [s for s in spans if s.kind.name == "SERVER"]
        client_spans = [s for s in spans if s.kind.name == "CLIENT"]
        assert len(server_spans) == 2
        assert len(client_spans) == 1
        trace_ids = {s.context.trace_id for s in [*server_spans, *client_spans]}
        assert len(trace_ids) == 1
        leaf_span = next(s for s in server_spans if s.resource.attributes["service.name"] == "leaf")
        assert leaf_span.parent is not None
        assert leaf_span.parent.span_id == client_spans[0].context.span_id
    finally:
        await edge_channel.close()
        await leaf_channel.close()
        await mid_service.stop()
        await leaf_service.stop()


async def test_stop_reports_not_serving_before_closing() -> None:
    probe = Probe()
    service = await start(probe, Telemetry("drain"), shutdown_grace_s=0.5)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE))
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        stopping = asyncio.create_task(service.stop())
        second = await watch.read()
        assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
        await stopping


async def test_reflection_lists_the_services_and_describes_them(probe_service: Any) -> None:
    _, service, _ = probe_service
    # As grpcurl does: no deadline (reflection is exempt) and no generated code for the service.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        listed, described = [
            reply
            async for reply in stub.ServerReflectionInfo(
                iter(
                    [
                        reflection_pb2.ServerReflectionRequest(list_services=""),
                        reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE),
                    ]
                )
            )
        ]
    names = {entry.name for entry in listed.list_services_response.service}
    assert names == {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in described.file_descriptor_response.file_descriptor_proto
    ]
    (router,) = [f for f in files if f.package == "supportmesh.router.v1"]
    (router_service,) = router.service
    assert {m.name for m in router_service.method} == {"Decide", "Feedback"}
