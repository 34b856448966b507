"""Prometheus collectors for outbound calls: calls, errors, retries, latency, breakers.

``tool_error_rate`` is ``rate(tool_errors_total) / rate(tool_calls_total)`` per tool;
``retry_total`` counts retries (attempts after the first), by tool and the code retried.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.kit.resilience.breaker import BreakerState

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class CallMetrics:
    """The collectors, registered once on the service's registry."""

    registry: CollectorRegistry
    calls: Counter = field(init=False)
    errors: Counter = field(init=False)
    retries: Counter = field(init=False)
    rejections: Counter = field(init=False)
    duration: Histogram = field(init=False)
    breaker_state: Gauge = field(init=False)

    def __post_init__(self) -> None:
        """Create and register the collectors."""
        self.calls = Counter(
            "tool_calls", "Tool calls completed, by tool.", ("tool",), registry=self.registry
        )
        self.errors = Counter(
            "tool_errors",
            "Tool calls that failed after all attempts, by tool and final status code.",
            ("tool", "code"),
            registry=self.registry,
        )
        self.retries = Counter(
            "retry",
            "Retried attempts of tool calls, by tool and the status code that caused them.",
            ("tool", "code"),
            registry=self.registry,
        )
        self.rejections = Counter(
            "tool_rejections",
            "Tool calls refused before reaching the dependency, by tool and cause.",
            ("tool", "cause"),
            registry=self.registry,
        )
        self.duration = Histogram(
            "tool_call_duration_seconds",
            "Time from a tool call's start to its final outcome, retries included.",
            ("tool",),
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.breaker_state = Gauge(
            "circuit_breaker_state",
            "Circuit breaker state per dependency: 0 closed, 1 half-open, 2 open.",
            ("dependency",),
            registry=self.registry,
        )

    def on_breaker_change(self, dependency: str, state: BreakerState) -> None:
        """Record a breaker's new state."""
        self.breaker_state.labels(dependency).set(state.value)
