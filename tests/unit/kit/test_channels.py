"""Kit channels propagate the call context on every kind of call, streams included."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from services.kit import channels, context
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
