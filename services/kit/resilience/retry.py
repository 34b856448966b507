"""Retries with exponential backoff and full jitter, and the status code of any failure."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc

from services.kit import errors
from supportmesh.common.v1 import errors_pb2

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]

# Failures where the request may not have taken effect, or took effect under an idempotency
# key, so that trying again is safe and may succeed.
DEFAULT_RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED}
)
_MAX_EXPONENT = 64  # beyond it every delay is max_backoff anyway; avoids float overflow
_CODES_BY_NAME = {code.name: code for code in grpc.StatusCode}


@dataclass(frozen=True)
class RetryConfig:
    """How failed attempts are retried: exponential backoff with full jitter."""

    max_attempts: int = 3
    """Total attempts including the first; 1 disables retries."""
    initial_backoff_s: float = 0.1
    """Upper bound of the delay before the first retry."""
    max_backoff_s: float = 2.0
    """Upper bound of any single delay."""
    multiplier: float = 2.0
    """Factor applied to the bound after each retry."""
    retryable: frozenset[grpc.StatusCode] = DEFAULT_RETRYABLE
    """Status codes worth retrying; anything else fails at once."""

    def __post_init__(self) -> None:
        """Refuse settings that make no sense."""
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("backoffs must not be negative")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")

    def ceiling(self, retry: int) -> float:
        """The largest delay before retry number ``retry`` (1 is the first retry)."""
        exponent = min(max(retry - 1, 0), _MAX_EXPONENT)
        return min(self.max_backoff_s, self.initial_backoff_s * self.multiplier**exponent)

    def delay(self, retry: int, rng: random.Random) -> float:
        """Full jitter: a uniform draw between zero and :meth:`ceiling`."""
        return rng.uniform(0.0, self.ceiling(retry))

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """Whether ``error`` from attempt number ``attempt`` (1-based) deserves another try."""
        if attempt >= self.max_attempts or is_circuit_open(error):
            return False
        return status_code(error) in self.retryable


def codes_from_names(names: list[str] | tuple[str, ...]) -> frozenset[grpc.StatusCode]:
    """Status codes from their names (e.g. "UNAVAILABLE"); unknown names are refused."""
    unknown = sorted(set(names) - _CODES_BY_NAME.keys())
    if unknown:
        raise ValueError(f"unknown status code names {unknown}")
    return frozenset(_CODES_BY_NAME[name] for name in names)


def status_code(error: BaseException) -> grpc.StatusCode:
    """The gRPC status code a failure stands for, whatever raised it."""
    if isinstance(error, errors.DomainError):
        return error.code
    if isinstance(error, grpc.RpcError):
        code = getattr(error, "code", None)
        found = code() if callable(code) else None
        return found if isinstance(found, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
    if isinstance(error, TimeoutError):  # before OSError: TimeoutError is one
        return grpc.StatusCode.DEADLINE_EXCEEDED
    if isinstance(error, OSError):
        return grpc.StatusCode.UNAVAILABLE
    return grpc.StatusCode.UNKNOWN


def is_circuit_open(error: BaseException) -> bool:
    """Whether ``error`` is a circuit breaker's refusal (never worth an immediate retry)."""
    return (
        isinstance(error, errors.Unavailable)
        and error.reason == errors_pb2.ERROR_REASON_CIRCUIT_OPEN
    )
