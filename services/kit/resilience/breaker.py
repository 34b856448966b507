"""A circuit breaker: fail fast while a dependency keeps failing, probe it now and then.

Closed, it counts consecutive failures; at ``failure_threshold`` it opens and refuses calls
with ``Unavailable`` (reason ``CIRCUIT_OPEN``, with the time left as RetryInfo). After
``reset_timeout_s`` it half-opens: exactly one trial call goes through while others are still
refused; the trial's success closes the circuit, its failure opens it for another period.
Only failures that say the dependency is unhealthy count (unavailable, timed out, internal);
an answer such as "not found" or "declined" proves the dependency works.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from services.kit import errors
from services.kit.resilience.retry import Clock, is_circuit_open, status_code
from supportmesh.common.v1 import errors_pb2

T = TypeVar("T")

DEFAULT_FAILURE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DATA_LOSS,
    }
)


class BreakerState(enum.Enum):
    """Where a circuit breaker is; the value is the metric's gauge value."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(frozen=True)
class Permit:
    """Leave to make one call, tied to the breaker's generation when it was given."""

    generation: int
    trial: bool


class CircuitBreaker:
    """One dependency's circuit breaker; see the module docstring for the states."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        reset_timeout_s: float = 60.0,
        clock: Clock = time.monotonic,
        failure_codes: frozenset[grpc.StatusCode] = DEFAULT_FAILURE_CODES,
        on_state_change: Callable[[str, BreakerState], None] | None = None,
    ) -> None:
        """Open after ``failure_threshold`` consecutive failures, for ``reset_timeout_s``."""
        if failure_threshold < 1 or reset_timeout_s < 0:
            raise ValueError("failure_threshold must be >= 1 and reset_timeout_s >= 0")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self.failure_codes = failure_codes
        self._clock = clock
        self._on_state_change = on_state_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False
        # Results of calls admitted before the last state change are ignored.
        self._generation = 0

    @property
    def state(self) -> BreakerState:
        """The current state, half-opening once the open period has passed."""
        if (
            self._state is BreakerState.OPEN
            and self._clock() - self._opened_at >= self.reset_timeout_s
        ):
            self._move(BreakerState.HALF_OPEN)
        return self._state

    @property
    def consecutive_failures(self) -> int:
        """Failures counted since the last success (while closed)."""
        return self._failures

    def acquire(self) -> Permit:
        """Leave for one call, or ``Unavailable(CIRCUIT_OPEN)`` when the circuit refuses it."""
        state = self.state
        if state is BreakerState.CLOSED:
            return Permit(self._generation, trial=False)
        if state is BreakerState.HALF_OPEN and not self._trial_in_flight:
            self._trial_in_flight = True
            return Permit(self._generation, trial=True)
        retry_after = max(0.0, self._opened_at + self.reset_timeout_s - self._clock())
        raise errors.Unavailable(
            f"circuit for {self.name} is open",
            reason=errors_pb2.ERROR_REASON_CIRCUIT_OPEN,
            metadata={"dependency": self.name},
            retry_after_s=retry_after,
        )

    def record(self, permit: Permit, error: BaseException | None) -> None:
        """Report how the call made under ``permit`` ended (``None`` for success)."""
        if permit.trial:
            self._trial_in_flight = False
        if permit.generation != self._generation:
            return
        if error is not None and self.is_failure(error):
            self._failures += 1
            if permit.trial or self._failures >= self.failure_threshold:
                self._opened_at = self._clock()
                self._move(BreakerState.OPEN)
        else:
            self._failures = 0
            if self._state is not BreakerState.CLOSED:
                self._move(BreakerState.CLOSED)

    def release(self, permit: Permit) -> None:
        """Give back a permit whose call ended without a verdict (it was cancelled)."""
        if permit.trial:
            self._trial_in_flight = False

    def is_failure(self, error: BaseException) -> bool:
        """Whether ``error`` counts against the dependency's health."""
        return not is_circuit_open(error) and status_code(error) in self.failure_codes

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` under the breaker."""
        permit = self.acquire()
        try:
            result = await fn()
        except Exception as error:
            self.record(permit, error)
            raise
        except BaseException:
            self.release(permit)
            raise
        self.record(permit, None)
        return result

    def _move(self, state: BreakerState) -> None:
        self._state = state
        self._generation += 1
        if state is BreakerState.CLOSED:
            self._failures = 0
        if self._on_state_change is not None:
            self._on_state_change(self.name, state)
