"""Resilience for calls leaving a service: timeouts, retries, circuit breakers, bulkheads.

Build one :class:`Resilience` per process on the service's Prometheus registry, then one
:class:`Adapter` per operation (``Resilience.for_tool(spec)`` reads a ToolSpec) and run every
outbound call through ``adapter.call(fn, key=...)``. Idempotency keys come from
:func:`step_key`, so retries and replays carry the same key.
"""

from services.kit.resilience.adapter import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_TIMEOUT_S,
    Adapter,
    CallPolicy,
    Resilience,
)
from services.kit.resilience.breaker import BreakerState, CircuitBreaker, Permit
from services.kit.resilience.bulkhead import Bulkhead
from services.kit.resilience.idempotency import IdempotencyKey, step_key
from services.kit.resilience.metrics import CallMetrics
from services.kit.resilience.retry import (
    DEFAULT_RETRYABLE,
    RetryConfig,
    codes_from_names,
    is_circuit_open,
    status_code,
)

__all__ = [
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_RETRYABLE",
    "DEFAULT_TIMEOUT_S",
    "Adapter",
    "BreakerState",
    "Bulkhead",
    "CallMetrics",
    "CallPolicy",
    "CircuitBreaker",
    "IdempotencyKey",
    "Permit",
    "Resilience",
    "RetryConfig",
    "codes_from_names",
    "is_circuit_open",
    "status_code",
    "step_key",
]
