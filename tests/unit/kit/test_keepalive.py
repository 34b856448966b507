"""Keepalive on kit channels notices a peer that went silent, during a call and when idle.

A relay between client and server stands in for the network: once frozen it swallows bytes
both ways without closing anything, as when the peer's host vanishes. Only the keepalive
ping going unanswered can tell the client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from services.kit import channels, server
from services.kit.server import Service, start_server
from services.kit.settings import ServiceSettings
from services.kit.telemetry import Telemetry

# Short intervals so the test takes about a second; gRPC sends keepalive pings at most once
# a second whatever is asked for.
FAST = ServiceSettings(keepalive_time_ms=200, keepalive_timeout_ms=200)


class Relay:
    """A TCP relay to ``127.0.0.1:upstream`` that can go silent without closing."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.frozen = asyncio.Event()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        """Listen on a free port; return the address to dial."""
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        self._writers += [writer, up_writer]
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(65536):
                if not self.frozen.is_set():
                    sink.write(data)
                    await sink.drain()
        sink.close()

    async def close(self) -> None:
        """Stop listening and drop every relayed connection."""
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()


async def _echo(request: bytes, context: Any) -> bytes:
    return request


async def _hold(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for frame in requests:
        yield frame


@pytest.fixture
async def relayed() -> AsyncIterator[tuple[Relay, grpc.aio.Channel]]:
    """A kit server behind a relay, and a kit channel with short keepalives dialing the relay."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "Echo": grpc.unary_unary_rpc_method_handler(_echo),
        "Hold": grpc.stream_stream_rpc_method_handler(_hold),
    }
    generic = grpc.method_handlers_generic_handler("t.T", handlers)
    service: Service = await start_server(
        ServiceSettings(),
        lambda s: s.add_generic_rpc_handlers((generic,)),
        ["t.T"],
        Telemetry("server"),
    )
    relay = Relay(service.port)
    channel = channels.create_channel(await relay.start(), FAST, Telemetry("client"))
    try:
        yield relay, channel
    finally:
        await channel.close()
        await relay.close()
        await service.stop()


async def test_a_silent_peer_fails_the_call_in_flight(relayed: Any) -> None:
    relay, channel = relayed
    held = channel.stream_stream("/t.T/Hold")(timeout=30)
    await held.write(b"ping")
    assert await held.read() == b"ping"
    relay.frozen.set()
    # Without keepalive the call would wait out its deadline (DEADLINE_EXCEEDED).
    with pytest.raises(grpc.aio.AioRpcError) as lost:
        await held.read()
    assert lost.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_a_silent_peer_is_noticed_on_an_idle_channel(relayed: Any) -> None:
    relay, channel = relayed
    assert await channel.unary_unary("/t.T/Echo")(b"hello", timeout=10) == b"hello"
    assert channel.get_state() is grpc.ChannelConnectivity.READY
    relay.frozen.set()
    # No call is in flight: only keepalive pings on the idle connection can find it dead.
    await asyncio.wait_for(
        channel.wait_for_state_change(grpc.ChannelConnectivity.READY), timeout=30
    )
    assert channel.get_state() is not grpc.ChannelConnectivity.READY


def test_kit_clients_ping_no_faster_than_kit_servers_accept() -> None:
    # Clients and servers share these options; a client pinging more often than the server
    # accepts would be sent GOAWAY (too_many_pings) on every idle connection.
    options = dict(server.grpc_options(ServiceSettings()))
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert (
        options["grpc.keepalive_time_ms"] >= options["grpc.http2.min_ping_interval_without_data_ms"]
    )
