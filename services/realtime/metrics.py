"""Prometheus metrics of the realtime service."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_DURATION_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class RealtimeMetrics:
    """Connections, backpressure losses, send failures and stream durations."""

    def __init__(self, registry: CollectorRegistry) -> None:
        """Register the metrics in ``registry``."""
        self.active = Gauge(
            "ws_active_connections", "Open chat streams (Chat and StreamChat, whatever the edge "
            "transport: WebSocket, SSE, gRPC).", ("rpc",), registry=registry,
        )  # fmt: skip
        self.drops = Counter(
            "ws_backpressure_drops", "Token deltas not sent as produced to a slow client: merged "
            "into a later delta (coalesced) or dropped.", ("action",), registry=registry,
        )  # fmt: skip
        self.send_errors = Counter(
            "ws_send_errors", "Events that could not be written to a client (it went away).",
            registry=registry,
        )  # fmt: skip
        self.durations = Histogram(
            "realtime_stream_duration_seconds", "How long chat streams stayed open.", ("rpc",),
            buckets=_DURATION_S, registry=registry,
        )  # fmt: skip
        self.refused = Counter(
            "realtime_connections_refused", "Streams refused, by reason.", ("reason",),
            registry=registry,
        )  # fmt: skip
