"""A kit server process drains on SIGTERM/SIGINT: NOT_SERVING, refuse new calls, finish, exit 0."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.unit.kit.probe_process import SERVICE

REPO_ROOT = Path(__file__).resolve().parents[3]
Status = health_pb2.HealthCheckResponse


async def _ready_port(process: asyncio.subprocess.Process) -> int:
    """The port from the process's READY line (the line the dev supervisor reads too)."""
    assert process.stdout is not None
    while line := await asyncio.wait_for(process.stdout.readline(), timeout=30):
        match = re.match(rb"READY probe port=(\d+)", line)
        if match:
            return int(match.group(1))
    raise AssertionError(f"exited before READY with {await process.wait()}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_drains_in_flight_calls_and_exits_cleanly(signum: signal.Signals) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.unit.kit.probe_process",
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        port = await _ready_port(process)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=SERVICE)
            )
            assert (await watch.read()).status == Status.SERVING
            # A call in flight when the signal arrives, kept open by the test.
            held: Any = channel.stream_stream(f"/{SERVICE}/Hold")(timeout=60)
            await held.write(b"first")
            assert await held.read() == b"first"

            process.send_signal(signum)
            # Health says NOT_SERVING while the server is still up and serving the held call.
            assert (await watch.read()).status == Status.NOT_SERVING
            watch.cancel()
            # Then the server stops accepting: its GOAWAY takes the channel out of READY and a
            # new call is refused, while the held call still goes on.
            await asyncio.wait_for(
                channel.wait_for_state_change(grpc.ChannelConnectivity.READY), timeout=30
            )
            echo: Any = channel.unary_unary(f"/{SERVICE}/Echo")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await echo(b"late", timeout=30)
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
            await held.write(b"last")
            assert await held.read() == b"last"
            await held.done_writing()
            assert await held.code() is grpc.StatusCode.OK

        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
        assert process.returncode == 0, stderr.decode()
        # The app's background work stops after the server has drained.
        assert stdout.decode().splitlines() == ["APP STOPPED"]
        assert b"signal received; draining" in stderr
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
