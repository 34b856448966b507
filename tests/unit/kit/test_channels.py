"""Kit channels: call context on every kind of call, retries, default deadline, message limits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from services.kit import channels, context, server
from services.kit.server import start_server
from services.kit.settings import ServiceSettings
from services.kit.telemetry import Telemetry


def _seen(servicer_context: Any) -> bytes:
    metadata = dict(servicer_context.invocation_metadata())
    return f"{metadata.get(context.TENANT_KEY)}|{metadata.get(context.REQUEST_ID_KEY)}".encode()


async def _unary(request: bytes, servicer_context: Any) -> bytes:
    return _seen(servicer_context)


async def _server_stream(request: bytes, servicer_context: Any) -> AsyncIterator[bytes]:
    yield _seen(servicer_context)


async def _client_stream(requests: AsyncIterator[bytes], servicer_context: Any) -> bytes:
    async for _ in requests:
        pass
    return _seen(servicer_context)


async def _bidi(requests: AsyncIterator[bytes], servicer_context: Any) -> AsyncIterator[bytes]:
    async for _ in requests:
        yield _seen(servicer_context)


@pytest.mark.parametrize("kind", ["unary_unary", "unary_stream", "stream_unary", "stream_stream"])
async def test_every_call_kind_carries_tenant_and_request_id(kind: str) -> None:
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "unary_unary": grpc.unary_unary_rpc_method_handler(_unary),
        "unary_stream": grpc.unary_stream_rpc_method_handler(_server_stream),
        "stream_unary": grpc.stream_unary_rpc_method_handler(_client_stream),
        "stream_stream": grpc.stream_stream_rpc_method_handler(_bidi),
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = channels.create_channel(f"127.0.0.1:{port}", ServiceSettings(), Telemetry("t"))
    token = context.bind(context.CallContext(request_id="req-1", method="m", tenant_id="acme"))
    try:
        method: Any = getattr(channel, kind)(f"/t.T/{kind}")
        if kind == "unary_unary":
            found = [await method(b"x")]
        elif kind == "unary_stream":
            found = [item async for item in method(b"x")]
        elif kind == "stream_unary":
            found = [await method(iter([b"x"]))]
        else:
            found = [item async for item in method(iter([b"x"]))]
        assert found == [b"acme|req-1"]
    finally:
        context.reset(token)
        await channel.close()
        await server.stop(0)


@asynccontextmanager
async def serving(
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]],
    settings: ServiceSettings | None = None,
) -> AsyncIterator[str]:
    """A kit server for ``t.T`` with ``handlers``; yields its address."""
    generic = grpc.method_handlers_generic_handler("t.T", handlers)
    service = await start_server(
        settings or ServiceSettings(),
        lambda s: s.add_generic_rpc_handlers((generic,)),
        ["t.T"],
        Telemetry("server"),
    )
    try:
        yield f"127.0.0.1:{service.port}"
    finally:
        await service.stop()


class Flaky:
    """A handler that fails its first ``failures`` attempts with ``code``, then answers."""

    def __init__(self, code: grpc.StatusCode, failures: int) -> None:
        self.code = code
        self.failures = failures
        self.attempts = 0

    async def __call__(self, request: bytes, servicer_context: Any) -> bytes:
        self.attempts += 1
        if self.attempts <= self.failures:
            await servicer_context.abort(self.code, f"attempt {self.attempts} fails")
        return b"answered"


@pytest.mark.parametrize(
    ("code", "failures", "outcome", "attempts"),
    [
        # UNAVAILABLE is retried, up to the config's three attempts in all.
        (grpc.StatusCode.UNAVAILABLE, 2, grpc.StatusCode.OK, 3),
        (grpc.StatusCode.UNAVAILABLE, 5, grpc.StatusCode.UNAVAILABLE, 3),
        # Anything else may have reached a handler with side effects: never retried.
        (grpc.StatusCode.INTERNAL, 1, grpc.StatusCode.INTERNAL, 1),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 1, grpc.StatusCode.DEADLINE_EXCEEDED, 1),
    ],
)
async def test_only_unavailable_is_retried_per_the_service_config(
    code: grpc.StatusCode, failures: int, outcome: grpc.StatusCode, attempts: int
) -> None:
    flaky = Flaky(code, failures)
    async with serving({"U": grpc.unary_unary_rpc_method_handler(flaky)}) as address:
        channel = channels.create_channel(address, ServiceSettings(), Telemetry("client"))
        try:
            method: Any = channel.unary_unary("/t.T/U")
            call = method(b"x", timeout=10)
            if outcome is grpc.StatusCode.OK:
                assert await call == b"answered"
            else:
                with pytest.raises(grpc.aio.AioRpcError) as failed:
                    await call
                assert failed.value.code() is outcome
        finally:
            await channel.close()
    assert flaky.attempts == attempts


async def _remaining(request: bytes, servicer_context: Any) -> bytes:
    return repr(servicer_context.time_remaining()).encode()


async def _remaining_stream(request: bytes, servicer_context: Any) -> AsyncIterator[bytes]:
    yield repr(servicer_context.time_remaining()).encode()


@pytest.mark.parametrize("kind", ["unary_unary", "unary_stream"])
async def test_calls_without_a_timeout_carry_the_default_deadline(kind: str) -> None:
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "unary_unary": grpc.unary_unary_rpc_method_handler(_remaining),
        "unary_stream": grpc.unary_stream_rpc_method_handler(_remaining_stream),
    }
    # The kit server refuses calls without a deadline, so an answer at all shows one arrived.
    async with serving(handlers) as address:
        channel = channels.create_channel(
            address, ServiceSettings(), Telemetry("client"), default_timeout_s=100
        )
        try:
            method: Any = getattr(channel, kind)(f"/t.T/{kind}")

            async def remaining(seconds: float | None) -> float:
                if kind == "unary_unary":
                    return float(await method(b"x", timeout=seconds))
                (reply,) = [item async for item in method(b"x", timeout=seconds)]
                return float(reply)

            # gRPC rounds the timeout it sends up by about 1%: the server sees roughly the time
            # asked for, and far from the default whenever the caller chose another.
            assert await remaining(None) == pytest.approx(100, rel=0.1)
            # An explicit timeout is the caller's choice, longer or shorter than the default.
            assert await remaining(1000) == pytest.approx(1000, rel=0.1)
            assert await remaining(20) == pytest.approx(20, rel=0.1)
        finally:
            await channel.close()


async def _sized(request: bytes, servicer_context: Any) -> bytes:
    """Answer with as many bytes as the request asks for."""
    return b"r" * int(request.rstrip(b"-"))


def _ask(size: int) -> bytes:
    """A request of exactly ``size`` bytes (padded) asking for a reply of ``size`` bytes."""
    text = str(size).encode()
    return text + b"-" * (size - len(text))


async def test_server_refuses_requests_above_its_max_message_size() -> None:
    limit = 4096
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "U": grpc.unary_unary_rpc_method_handler(_sized)
    }
    async with (
        serving(handlers, ServiceSettings(max_message_bytes=limit)) as address,
        # A bare channel with gRPC's own limits, so only the server's limit applies.
        grpc.aio.insecure_channel(address) as channel,
    ):
        method: Any = channel.unary_unary("/t.T/U")
        assert len(await method(_ask(limit // 2), timeout=10)) == limit // 2
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await method(_ask(limit + 1), timeout=10)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_channel_refuses_to_send_or_receive_above_its_max_message_size() -> None:
    limit = 4096
    plain = grpc.aio.server()
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "U": grpc.unary_unary_rpc_method_handler(_sized)
    }
    plain.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", handlers),))
    port = plain.add_insecure_port("127.0.0.1:0")
    await plain.start()
    channel = channels.create_channel(
        f"127.0.0.1:{port}", ServiceSettings(max_message_bytes=limit), Telemetry("client")
    )
    try:
        method: Any = channel.unary_unary("/t.T/U")
        assert len(await method(_ask(limit // 2), timeout=10)) == limit // 2
        # Too big to send: refused before it leaves the client.
        with pytest.raises(grpc.aio.AioRpcError) as too_big:
            await method(_ask(limit + 1), timeout=10)
        assert too_big.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        # A small request whose reply is too big to receive.
        with pytest.raises(grpc.aio.AioRpcError) as reply_too_big:
            await method(str(limit + 1).encode(), timeout=10)
        assert reply_too_big.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await channel.close()
        await plain.stop(0)


def test_default_message_limit_is_4_mib_both_ways() -> None:
    options = dict(server.grpc_options(ServiceSettings()))
    assert options["grpc.max_send_message_length"] == 4 * 1024 * 1024
    assert options["grpc.max_receive_message_length"] == 4 * 1024 * 1024
