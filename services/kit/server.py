"""grpc.aio server bootstrap: interceptors, health, reflection, limits, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.kit import heap, logs
from services.kit.interceptors import ServerInterceptor
from services.kit.settings import ServiceSettings
from services.kit.telemetry import Telemetry

_log = logging.getLogger("supportmesh.server")

Register = Callable[[grpc.aio.Server], None]


def grpc_options(settings: ServiceSettings) -> list[tuple[str, int]]:
    """Channel arguments shared by servers and clients: message size and keepalive."""
    return [
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", settings.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", settings.keepalive_timeout_ms),
        # grpcio closes a connection whose keepalive ping goes unanswered after the ping
        # timeout (60 s by default), not after keepalive_timeout_ms: both carry the setting.
        ("grpc.http2.ping_timeout_ms", settings.keepalive_timeout_ms),
        # Ping idle connections too (gRPC's default pings only while calls are in flight), so
        # a dead peer is found before the next call waits on it; servers accept such pings.
        ("grpc.keepalive_permit_without_calls", 1),
        # Accept client pings as often as every 10 s without calling them abusive.
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ]


@dataclass
class Service:
    """A started gRPC server with its health servicer and bound port."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: tuple[str, ...]
    telemetry: Telemetry
    grace_s: float

    async def set_serving(self, serving: bool) -> None:
        """Report SERVING or NOT_SERVING for the overall server and each service."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self.service_names):
            await self.health.set(name, status)

    async def stop(self) -> None:
        """Drain: report NOT_SERVING first, then let in-flight calls finish within the grace."""
        await self.set_serving(False)
        await self.server.stop(self.grace_s)
        self.telemetry.shutdown()


async def start_server(
    settings: ServiceSettings,
    register: Register,
    service_names: Sequence[str],
    telemetry: Telemetry,
) -> Service:
    """Build, bind and start a server; ``settings.port`` 0 binds a free port (tests)."""
    server = grpc.aio.server(
        interceptors=[ServerInterceptor(telemetry, require_deadline=settings.require_deadline)],
        options=grpc_options(settings),
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = tuple(service_names)
    reflection.enable_server_reflection(
        (
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    await server.start()
    service = Service(server, port, health_servicer, names, telemetry, settings.shutdown_grace_s)
    await service.set_serving(True)
    if settings.metrics_port:
        telemetry.serve_metrics(settings.host, settings.metrics_port)
    _log.info("serving", extra={"port": port, "services": list(names)})
    return service


async def run_until_signalled(service: Service) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    serving = asyncio.ensure_future(service.server.wait_for_termination())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if stop.is_set():
        _log.info("signal received; draining")
        await service.stop()
    serving.cancel()
    stopping.cancel()


def run_service(
    settings: ServiceSettings, build: Callable[[], tuple[Sequence[str], Register]]
) -> None:
    """Entry point body of a service's ``__main__``: logs, telemetry, serve until signalled."""
    logs.configure(settings.service_name, settings.log_level, settings.log_json)

    async def main() -> None:
        names, register = build()
        heap.freeze()  # before the port opens: nothing waits on this collection
        service = await start_server(settings, register, names, Telemetry(settings.service_name))
        # The dev supervisor and tests read the bound port from this line.
        print(f"READY {settings.service_name} port={service.port}", flush=True)
        await run_until_signalled(service)

    asyncio.run(main())


class ServiceApp(Protocol):
    """A service with background work: registers servicers, starts before and stops after."""

    service_names: tuple[str, ...]

    def register(self, server: grpc.aio.Server) -> None:
        """Add the servicers to ``server``."""

    async def start(self) -> None:
        """Start background work (consumers, refresh loops) before serving."""

    async def stop(self) -> None:
        """Stop background work after the server has drained."""


def run_app(settings: ServiceSettings, build: Callable[[Telemetry], ServiceApp]) -> None:
    """Entry point body for a service whose app needs the server's Telemetry and lifecycle."""
    logs.configure(settings.service_name, settings.log_level, settings.log_json)

    async def main() -> None:
        telemetry = Telemetry(settings.service_name)
        app = build(telemetry)
        await app.start()
        heap.freeze()  # before the port opens: nothing waits on this collection
        try:
            service = await start_server(settings, app.register, app.service_names, telemetry)
            # The dev supervisor and tests read the bound port from this line.
            print(f"READY {settings.service_name} port={service.port}", flush=True)
            await run_until_signalled(service)
        finally:
            await app.stop()

    asyncio.run(main())
