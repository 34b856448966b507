"""A kit server in a process of its own, for the shutdown tests.

``python -m tests.unit.kit.probe_process`` serves ``probe.v1.Probe`` through :func:`run_app`, as
the services' ``__main__`` modules do: ``Echo`` answers at once and ``Hold`` echoes every frame
of a bidirectional stream until the client closes it, so a test can keep a call in flight
across the signal. The app prints ``APP STOPPED`` once its ``stop`` has run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from services.kit.server import run_app
from services.kit.settings import ServiceSettings
from services.kit.telemetry import Telemetry

SERVICE = "probe.v1.Probe"


async def _echo(request: bytes, context: Any) -> bytes:
    return request


async def _hold(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for frame in requests:
        yield frame


class ProbeApp:
    """A ServiceApp whose only background work is saying when it stopped."""

    service_names: tuple[str, ...] = (SERVICE,)

    def register(self, server: grpc.aio.Server) -> None:
        """Add the generic probe handlers."""
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            "Echo": grpc.unary_unary_rpc_method_handler(_echo),
            "Hold": grpc.stream_stream_rpc_method_handler(_hold),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))

    async def start(self) -> None:
        """Nothing to start."""

    async def stop(self) -> None:
        """Report that the app's stop ran (after the server drained)."""
        print("APP STOPPED", flush=True)


def main() -> None:
    """Serve on a free loopback port until SIGTERM or SIGINT."""
    # A long grace: the in-flight call the test holds must be drained, not cut off.
    settings = ServiceSettings(
        service_name="probe", host="127.0.0.1", port=0, metrics_port=0, shutdown_grace_s=60
    )

    def build(telemetry: Telemetry) -> ProbeApp:
        return ProbeApp()

    run_app(settings, build)


if __name__ == "__main__":
    main()
