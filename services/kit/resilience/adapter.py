"""Adapters: one policy object per outbound operation, composing the resilience parts.

A call goes through the bulkhead (per key, for the whole call), then up to
``max_attempts`` attempts, each admitted by the dependency's circuit breaker and bounded by
the per-attempt timeout (never longer than the inbound call has left), with exponential
backoff and full jitter between attempts.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from prometheus_client import CollectorRegistry

from services.kit import context, errors
from services.kit.resilience.breaker import CircuitBreaker
from services.kit.resilience.bulkhead import Bulkhead
from services.kit.resilience.metrics import CallMetrics
from services.kit.resilience.retry import (
    Clock,
    RetryConfig,
    Sleep,
    codes_from_names,
    is_circuit_open,
    status_code,
)
from supportmesh.spec.v1 import tool_pb2

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 30.0  # the seed's default; critical tools declare 5 s in their spec
DEFAULT_MAX_CONCURRENCY = 16


@dataclass(frozen=True)
class CallPolicy:
    """Timeout, retries and concurrency limit of one operation."""

    timeout_s: float = DEFAULT_TIMEOUT_S
    """Time limit of one attempt."""
    retry: RetryConfig = field(default_factory=RetryConfig)
    """How failed attempts are retried."""
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    """Calls in flight per bulkhead key."""

    @classmethod
    def from_spec(cls, spec: tool_pb2.ToolSpec) -> CallPolicy:
        """The policy a ToolSpec declares; unset fields take the defaults."""
        timeout = spec.timeout.ToTimedelta().total_seconds() if spec.HasField("timeout") else 0
        retry = RetryConfig()
        if spec.HasField("retry_policy"):
            policy = spec.retry_policy
            codes = tuple(policy.retryable_codes)
            retry = RetryConfig(
                max_attempts=max(policy.max_attempts, 1),
                initial_backoff_s=policy.initial_backoff.ToTimedelta().total_seconds(),
                max_backoff_s=policy.max_backoff.ToTimedelta().total_seconds(),
                multiplier=max(policy.backoff_multiplier, 1.0),
                retryable=codes_from_names(codes) if codes else retry.retryable,
            )
        return cls(
            timeout_s=timeout if timeout > 0 else DEFAULT_TIMEOUT_S,
            retry=retry,
            max_concurrency=spec.max_concurrency or DEFAULT_MAX_CONCURRENCY,
        )


class Adapter:
    """Runs calls of one operation under its policy; see the module docstring for the order."""

    def __init__(
        self,
        name: str,
        policy: CallPolicy,
        breaker: CircuitBreaker,
        metrics: CallMetrics,
        *,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        bulkhead_wait_s: float = 0.0,
    ) -> None:
        """Wire the parts; ``breaker`` is usually shared by every operation of a dependency."""
        self.name = name
        self.policy = policy
        self.breaker = breaker
        self.bulkhead = Bulkhead(name, policy.max_concurrency, max_wait_s=bulkhead_wait_s)
        self._metrics = metrics
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrecy

    async def call(self, fn: Callable[[], Awaitable[T]], *, key: str = "") -> T:
        """Run ``fn`` (one attempt per invocation) under the policy; ``key`` picks the bulkhead."""
        started = time.perf_counter()
        self._metrics.calls.labels(self.name).inc()
        try:
            async with self.bulkhead.slot(key):
                return await self._attempts(fn)
        except Exception as error:
            if isinstance(error, errors.ResourceExhausted) and (
                error.metadata.get("bulkhead") == self.name
            ):
                self._metrics.rejections.labels(self.name, "bulkhead_full").inc()
            elif is_circuit_open(error):
                self._metrics.rejections.labels(self.name, "circuit_open").inc()
            self._metrics.errors.labels(self.name, status_code(error).name).inc()
            raise
        finally:
            self._metrics.duration.labels(self.name).observe(time.perf_counter() - started)

    async def _attempts(self, fn: Callable[[], Awaitable[T]]) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self.breaker.call(lambda: self._attempt(fn))
            except Exception as error:
                if not self.policy.retry.should_retry(error, attempt):
                    raise
                delay = self.policy.retry.delay(attempt, self._rng)
                remaining = _inbound_remaining()
                if remaining is not None and remaining <= delay:
                    raise  # the caller would be gone before the retry could answer
                self._metrics.retries.labels(self.name, status_code(error).name).inc()
                await self._sleep(delay)

    async def _attempt(self, fn: Callable[[], Awaitable[T]]) -> T:
        timeout = self.policy.timeout_s
        remaining = _inbound_remaining()
        if remaining is not None:
            timeout = min(timeout, remaining)
        try:
            async with asyncio.timeout(timeout):
                return await fn()
        except TimeoutError:
            raise errors.DeadlineExceeded(
                f"{self.name} did not answer within {timeout:.3g} s",
                metadata={"operation": self.name},
            ) from None


def _inbound_remaining() -> float | None:
    call = context.current()
    return None if call is None else call.time_remaining()


class Resilience:
    """Shared state of one process's outbound calls: breakers per dependency, metrics."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        failure_threshold: int = 5,
        reset_timeout_s: float = 60.0,
        bulkhead_wait_s: float = 0.0,
    ) -> None:
        """Register the metrics on ``registry``; the rest are injectable for tests."""
        self.metrics = CallMetrics(registry)
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._failure_threshold = failure_threshold
        self._reset_timeout_s = reset_timeout_s
        self._bulkhead_wait_s = bulkhead_wait_s
        self._breakers: dict[str, CircuitBreaker] = {}

    def breaker(self, dependency: str) -> CircuitBreaker:
        """The circuit breaker of ``dependency``, created on first use."""
        breaker = self._breakers.get(dependency)
        if breaker is None:
            breaker = CircuitBreaker(
                dependency,
                failure_threshold=self._failure_threshold,
                reset_timeout_s=self._reset_timeout_s,
                clock=self._clock,
                on_state_change=self.metrics.on_breaker_change,
            )
            self.metrics.on_breaker_change(dependency, breaker.state)
            self._breakers[dependency] = breaker
        return breaker

    def adapter(self, name: str, policy: CallPolicy, *, dependency: str | None = None) -> Adapter:
        """An adapter for operation ``name``; its breaker is ``dependency``'s (default: name)."""
        return Adapter(
            name,
            policy,
            self.breaker(dependency or name),
            self.metrics,
            sleep=self._sleep,
            rng=self._rng,
            bulkhead_wait_s=self._bulkhead_wait_s,
        )

    def for_tool(self, spec: tool_pb2.ToolSpec, *, dependency: str | None = None) -> Adapter:
        """The adapter a ToolSpec declares; the breaker defaults to the name's first part."""
        return self.adapter(
            spec.name,
            CallPolicy.from_spec(spec),
            dependency=dependency or spec.name.split(".", 1)[0],
        )
