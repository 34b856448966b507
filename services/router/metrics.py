"""The router's Prometheus metrics, registered on the service's Telemetry registry.

No tenant label: tenants are unbounded, and per-tenant figures belong to analytics.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_DECISION_MS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 25.0, 100.0)
_ANSWER_MS = (100.0, 200.0, 400.0, 800.0, 1200.0, 2000.0, 4000.0, 8000.0, 16000.0)


class RouterMetrics:
    """Decision latency, tier mix, misroutes, expected vs actual cost and latency, canaries."""

    def __init__(self, registry: CollectorRegistry) -> None:
        """Create the collectors on ``registry``."""
        self.decision_latency = Histogram(
            "router_decision_latency_ms", "Time to decide a tier, in milliseconds.",
            buckets=_DECISION_MS, registry=registry,
        )  # fmt: skip
        self.decisions = Counter(
            "router_decisions", "Decisions by chosen tier and by what decided (tier distribution).",
            ("tier", "source"), registry=registry,
        )  # fmt: skip
        self.explorations = Counter(
            "router_explorations", "Decisions where a Thompson draw overturned the greedy tier.",
            registry=registry,
        )  # fmt: skip
        self.fallbacks = Counter(
            "router_fallbacks", "Decisions made by the rule policy, by reason.", ("reason",),
            registry=registry,
        )  # fmt: skip
        self.outcomes = Counter(
            "router_outcomes", "Outcomes applied, by decided tier and result.", ("tier", "result"),
            registry=registry,
        )  # fmt: skip
        self.misroutes = Counter(
            "router_misroutes", "Outcomes whose first tier failed (escalated or not accepted).",
            registry=registry,
        )  # fmt: skip
        self.judge_rejections = Counter(
            "router_judge_rejections", "Outcomes reported successful that a judge scored too low.",
            registry=registry,
        )  # fmt: skip
        self.misroute_rate = Gauge(
            "router_misroute_rate", "Misroutes / outcomes applied by this process.",
            registry=registry,
        )  # fmt: skip
        self.expected_cost = Counter(
            "router_expected_cost_usd", "Expected cost of decisions with an outcome, in USD.",
            registry=registry,
        )  # fmt: skip
        self.actual_cost = Counter(
            "router_actual_cost_usd", "Actual cost reported by their outcomes, in USD.",
            registry=registry,
        )  # fmt: skip
        self.expected_latency = Histogram(
            "router_expected_latency_ms", "Expected answer latency of decisions with an outcome.",
            buckets=_ANSWER_MS, registry=registry,
        )  # fmt: skip
        self.actual_latency = Histogram(
            "router_actual_latency_ms", "Actual answer latency reported by outcomes.",
            buckets=_ANSWER_MS, registry=registry,
        )  # fmt: skip
        self.rollbacks = Counter(
            "router_canary_rollbacks", "Canary policy versions rolled back automatically.",
            ("version",), registry=registry,
        )  # fmt: skip
        self.state_errors = Counter(
            "router_state_errors", "Valkey or PostgreSQL operations that failed, by operation.",
            ("operation",), registry=registry,
        )  # fmt: skip
        self._outcomes = 0
        self._misroutes = 0

    def outcome(self, tier: str, success: bool, misroute: bool) -> None:
        """Count one applied outcome and refresh the misroute rate."""
        self.outcomes.labels(tier, "success" if success else "failure").inc()
        self._outcomes += 1
        if misroute:
            self.misroutes.inc()
            self._misroutes += 1
        self.misroute_rate.set(self._misroutes / self._outcomes)
