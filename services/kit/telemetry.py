"""Prometheus metrics and OpenTelemetry tracing for one service process.

Nothing here is a module global: each server builds its own :class:`Telemetry`, which owns a
Prometheus registry and a tracer, so tests can run several services in one process and read
each one's figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

# Latency buckets in seconds: sub-millisecond resolution for the mesh's fast paths.
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


@dataclass
class Telemetry:
    """The metrics registry and tracer of one service."""

    service: str
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    span_processors: tuple[SpanProcessor, ...] = ()
    tracer_provider: TracerProvider = field(init=False)
    tracer: trace.Tracer = field(init=False)
    handled: Counter = field(init=False)
    latency: Histogram = field(init=False)
    client_handled: Counter = field(init=False)

    def __post_init__(self) -> None:
        """Create the collectors and the tracer."""
        labels = ("grpc_service", "grpc_method", "grpc_code")
        self.handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, by method and status code.",
            labels,
            registry=self.registry,
        )
        self.latency = Histogram(
            "grpc_server_handling_seconds",
            "Time to complete an RPC on the server, by method and status code.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.client_handled = Counter(
            "grpc_client_handled",
            "RPCs completed by this process as a client, by method and status code.",
            labels,
            registry=self.registry,
        )
        self.tracer_provider = TracerProvider(
            resource=Resource.create({"service.name": self.service})
        )
        for processor in self.span_processors:
            self.tracer_provider.add_span_processor(processor)
        self.tracer = self.tracer_provider.get_tracer("supportmesh.kit")

    def serve_metrics(self, host: str, port: int) -> None:
        """Expose ``/metrics`` over HTTP for Prometheus to scrape."""
        start_http_server(port, addr=host, registry=self.registry)

    def shutdown(self) -> None:
        """Flush and stop span export."""
        self.tracer_provider.shutdown()


def split_method(full_method: str) -> tuple[str, str]:
    """Split ``/pkg.Service/Method`` into ``("pkg.Service", "Method")``."""
    _, _, rest = full_method.partition("/")
    service, _, method = rest.partition("/")
    return service, method
