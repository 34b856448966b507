"""Timeouts, retries with backoff and jitter, circuit breaker, bulkhead, adapter, keys."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone

import grpc
import pytest
from prometheus_client import CollectorRegistry

from services.kit import errors
from services.kit.resilience import (
    BreakerState,
    Bulkhead,
    CallPolicy,
    CircuitBreaker,
    IdempotencyKey,
    Resilience,
    RetryConfig,
    status_code,
    step_key,
)
from supportmesh.common.v1 import errors_pb2
from supportmesh.spec.v1 import tool_pb2


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Sleeps:
    """An injected sleep that records the delays and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def flaky(
    failures: int, error: Callable[[], Exception]
) -> tuple[list[int], Callable[[], Awaitable[str]]]:
    """A call that raises ``error()`` ``failures`` times, then answers "ok"."""
    calls: list[int] = []

    async def call() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise error()
        return "ok"

    return calls, call


def state(breaker: CircuitBreaker) -> BreakerState:
    """The breaker's state (a call, so that mypy does not narrow it between asserts)."""
    return breaker.state


def unavailable() -> Exception:
    return errors.Unavailable("down")


def resilience() -> tuple[Resilience, CollectorRegistry, FakeClock, Sleeps]:
    registry, clock, sleeps = CollectorRegistry(), FakeClock(), Sleeps()
    built = Resilience(registry, clock=clock, sleep=sleeps, rng=random.Random(7))
    return built, registry, clock, sleeps


def test_backoff_ceiling_grows_exponentially_up_to_the_maximum() -> None:
    config = RetryConfig(initial_backoff_s=0.1, max_backoff_s=1.0, multiplier=2.0)
    ceilings = [config.ceiling(retry) for retry in range(1, 7)]
    assert ceilings == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert config.ceiling(10_000) == 1.0  # no overflow for absurd retry numbers


def test_full_jitter_spreads_delays_over_zero_to_the_ceiling() -> None:
    config = RetryConfig(initial_backoff_s=1.0, max_backoff_s=8.0, multiplier=2.0)
    rng = random.Random(1)
    for retry in (1, 2, 3, 4, 5):
        draws = [config.delay(retry, rng) for _ in range(2000)]
        ceiling = config.ceiling(retry)
        assert all(0.0 <= draw <= ceiling for draw in draws)
        assert min(draws) < 0.05 * ceiling
        assert max(draws) > 0.95 * ceiling
        assert 0.45 * ceiling < sum(draws) / len(draws) < 0.55 * ceiling


def test_retry_config_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryConfig(max_attempts=0)
    with pytest.raises(ValueError, match="multiplier"):
        RetryConfig(multiplier=0.5)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.NotFound("x"), grpc.StatusCode.NOT_FOUND),
        (TimeoutError(), grpc.StatusCode.DEADLINE_EXCEEDED),
        (ConnectionRefusedError(), grpc.StatusCode.UNAVAILABLE),
        (ValueError(), grpc.StatusCode.UNKNOWN),
    ],
)
def test_status_code_of_any_failure(error: BaseException, code: grpc.StatusCode) -> None:
    assert status_code(error) is code


async def test_adapter_retries_retryable_errors_with_bounded_backoff() -> None:
    built, registry, _, sleeps = resilience()
    policy = CallPolicy(retry=RetryConfig(max_attempts=4, initial_backoff_s=0.5, max_backoff_s=1.0))
    adapter = built.adapter("crm.create_lead", policy)
    calls, call = flaky(2, unavailable)
    assert await adapter.call(call, key="acme") == "ok"
    assert len(calls) == 3
    assert len(sleeps.delays) == 2
    assert all(0 <= delay <= policy.retry.ceiling(n + 1) for n, delay in enumerate(sleeps.delays))
    labels = {"tool": "crm.create_lead", "code": "UNAVAILABLE"}
    assert registry.get_sample_value("retry_total", labels) == 2
    assert registry.get_sample_value("tool_calls_total", {"tool": "crm.create_lead"}) == 1
    assert registry.get_sample_value("tool_errors_total", labels) is None


async def test_adapter_gives_up_after_max_attempts_and_counts_the_error() -> None:
    built, registry, _, sleeps = resilience()
    adapter = built.adapter("mail.send", CallPolicy(retry=RetryConfig(max_attempts=3)))
    calls, call = flaky(10, unavailable)
    with pytest.raises(errors.Unavailable):
        await adapter.call(call)
    assert len(calls) == 3
    assert len(sleeps.delays) == 2
    labels = {"tool": "mail.send", "code": "UNAVAILABLE"}
    assert registry.get_sample_value("tool_errors_total", labels) == 1


async def test_adapter_does_not_retry_errors_outside_the_retryable_set() -> None:
    built, _, _, sleeps = resilience()
    adapter = built.adapter("payment.charge", CallPolicy(retry=RetryConfig(max_attempts=5)))
    calls, call = flaky(10, lambda: errors.FailedPrecondition("card declined"))
    with pytest.raises(errors.FailedPrecondition):
        await adapter.call(call)
    assert len(calls) == 1
    assert not sleeps.delays


async def test_each_attempt_is_bounded_by_the_timeout() -> None:
    built, registry, _, _ = resilience()
    policy = CallPolicy(timeout_s=0.01, retry=RetryConfig(max_attempts=2))
    adapter = built.adapter("orders.get", policy)
    attempts: list[int] = []

    async def hangs() -> str:
        attempts.append(1)
        await asyncio.Event().wait()
        return "never"

    with pytest.raises(errors.DeadlineExceeded) as raised:
        await adapter.call(hangs)
    assert raised.value.reason == errors_pb2.ERROR_REASON_TIMEOUT
    assert len(attempts) == 2  # DEADLINE_EXCEEDED is retryable by default
    labels = {"tool": "orders.get", "code": "DEADLINE_EXCEEDED"}
    assert registry.get_sample_value("retry_total", labels) == 1


def test_breaker_opens_after_five_consecutive_failures_and_half_opens_after_60_s() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("payment", clock=clock)
    for _ in range(4):
        breaker.record(breaker.acquire(), errors.Unavailable("down"))
    assert state(breaker) is BreakerState.CLOSED
    breaker.record(breaker.acquire(), errors.Unavailable("down"))
    assert state(breaker) is BreakerState.OPEN
    with pytest.raises(errors.Unavailable) as raised:
        breaker.acquire()
    assert raised.value.reason == errors_pb2.ERROR_REASON_CIRCUIT_OPEN
    assert raised.value.retry_after_s == pytest.approx(60.0)
    clock.advance(59.9)
    with pytest.raises(errors.Unavailable):
        breaker.acquire()
    clock.advance(0.1)
    assert state(breaker) is BreakerState.HALF_OPEN
    trial = breaker.acquire()
    assert trial.trial
    with pytest.raises(errors.Unavailable):  # one trial at a time
        breaker.acquire()
    breaker.record(trial, None)
    assert state(breaker) is BreakerState.CLOSED
    assert not breaker.acquire().trial


def test_a_failed_trial_opens_the_breaker_for_another_period() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("crm", clock=clock, failure_threshold=5, reset_timeout_s=60)
    for _ in range(5):
        breaker.record(breaker.acquire(), errors.DeadlineExceeded("slow"))
    clock.advance(60)
    breaker.record(breaker.acquire(), errors.Unavailable("still down"))
    assert state(breaker) is BreakerState.OPEN
    clock.advance(59)
    assert state(breaker) is BreakerState.OPEN
    clock.advance(1)
    assert state(breaker) is BreakerState.HALF_OPEN


def test_answers_and_successes_keep_the_breaker_closed() -> None:
    breaker = CircuitBreaker("crm", clock=FakeClock())
    for _ in range(4):
        breaker.record(breaker.acquire(), errors.Unavailable("down"))
    breaker.record(breaker.acquire(), errors.NotFound("no such lead"))  # the CRM answered
    for _ in range(4):
        breaker.record(breaker.acquire(), errors.Unavailable("down"))
    assert state(breaker) is BreakerState.CLOSED
    breaker.record(breaker.acquire(), None)
    assert breaker.consecutive_failures == 0


def test_results_of_calls_admitted_before_the_breaker_opened_are_ignored() -> None:
    breaker = CircuitBreaker("mail", clock=FakeClock(), failure_threshold=2)
    straggler = breaker.acquire()
    breaker.record(breaker.acquire(), errors.Unavailable("down"))
    breaker.record(breaker.acquire(), errors.Unavailable("down"))
    breaker.record(straggler, None)
    assert state(breaker) is BreakerState.OPEN


async def test_adapter_stops_retrying_once_the_circuit_opens() -> None:
    built, registry, clock, _ = resilience()
    adapter = built.adapter("payment.charge", CallPolicy(retry=RetryConfig(max_attempts=10)))
    calls, call = flaky(100, unavailable)
    with pytest.raises(errors.Unavailable) as raised:
        await adapter.call(call)
    assert raised.value.reason == errors_pb2.ERROR_REASON_CIRCUIT_OPEN
    assert len(calls) == 5
    assert registry.get_sample_value("circuit_breaker_state", {"dependency": "payment.charge"}) == 2
    labels = {"tool": "payment.charge", "cause": "circuit_open"}
    assert registry.get_sample_value("tool_rejections_total", labels) == 1
    clock.advance(60)
    calls.clear()
    _, healthy = flaky(0, unavailable)
    assert await adapter.call(healthy) == "ok"
    assert state(adapter.breaker) is BreakerState.CLOSED


async def test_tools_of_one_dependency_share_its_breaker() -> None:
    built, _, _, _ = resilience()
    charge = built.for_tool(tool_pb2.ToolSpec(name="payment.charge"))
    refund = built.for_tool(tool_pb2.ToolSpec(name="payment.refund"))
    assert charge.breaker is refund.breaker
    assert built.for_tool(tool_pb2.ToolSpec(name="crm.create_lead")).breaker is not charge.breaker


async def test_bulkhead_limits_calls_in_flight_per_key() -> None:
    bulkhead = Bulkhead("payment.charge", limit=2)
    release = asyncio.Event()
    entered = [asyncio.Event(), asyncio.Event()]

    async def hold(key: str, inside: asyncio.Event) -> None:
        async with bulkhead.slot(key):
            inside.set()
            await release.wait()

    holders = [asyncio.create_task(hold("acme", inside)) for inside in entered]
    await asyncio.gather(*(inside.wait() for inside in entered))
    assert bulkhead.in_flight("acme") == 2
    with pytest.raises(errors.ResourceExhausted) as raised:
        async with bulkhead.slot("acme"):
            pass
    assert raised.value.metadata["bulkhead"] == "payment.charge"
    async with bulkhead.slot("globex"):  # another tenant is not affected
        assert bulkhead.in_flight("globex") == 1
    release.set()
    await asyncio.gather(*holders)
    assert bulkhead.in_flight("acme") == 0
    async with bulkhead.slot("acme"):
        pass


async def test_bulkhead_with_a_wait_bound_admits_a_waiter_when_a_slot_frees() -> None:
    bulkhead = Bulkhead("crm.create_lead", limit=1, max_wait_s=60)
    release, holding = asyncio.Event(), asyncio.Event()
    order: list[str] = []

    async def first() -> None:
        async with bulkhead.slot("acme"):
            order.append("first")
            holding.set()
            await release.wait()

    async def second() -> None:
        async with bulkhead.slot("acme"):
            order.append("second")

    holder = asyncio.create_task(first())
    await holding.wait()
    waiter = asyncio.create_task(second())
    await asyncio.sleep(0)
    assert order == ["first"]
    release.set()
    await asyncio.gather(holder, waiter)
    assert order == ["first", "second"]


async def test_adapter_counts_bulkhead_rejections() -> None:
    built, registry, _, _ = resilience()
    adapter = built.adapter("mail.send", CallPolicy(max_concurrency=1))
    release, started = asyncio.Event(), asyncio.Event()

    async def slow() -> str:
        started.set()
        await release.wait()
        return "ok"

    task = asyncio.create_task(adapter.call(slow, key="acme"))
    await started.wait()
    with pytest.raises(errors.ResourceExhausted):
        await adapter.call(slow, key="acme")
    release.set()
    assert await task == "ok"
    labels = {"tool": "mail.send", "cause": "bulkhead_full"}
    assert registry.get_sample_value("tool_rejections_total", labels) == 1


def test_call_policy_reads_a_tool_spec() -> None:
    spec = tool_pb2.ToolSpec(name="payment.charge", max_concurrency=4)
    spec.timeout.FromTimedelta(timedelta(seconds=5))
    spec.retry_policy.max_attempts = 4
    spec.retry_policy.initial_backoff.FromTimedelta(timedelta(milliseconds=200))
    spec.retry_policy.max_backoff.FromTimedelta(timedelta(seconds=3))
    spec.retry_policy.backoff_multiplier = 3.0
    spec.retry_policy.retryable_codes.extend(["UNAVAILABLE", "ABORTED"])
    policy = CallPolicy.from_spec(spec)
    assert policy.timeout_s == 5.0
    assert policy.max_concurrency == 4
    assert policy.retry == RetryConfig(
        max_attempts=4,
        initial_backoff_s=0.2,
        max_backoff_s=3.0,
        multiplier=3.0,
        retryable=frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED}),
    )
    defaults = CallPolicy.from_spec(tool_pb2.ToolSpec(name="orders.get"))
    assert defaults == CallPolicy()


def test_idempotency_keys_are_deterministic_per_step_and_attempt_independent() -> None:
    started = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    key = step_key("payment.charge", "acme", "run-1", "charge", started)
    assert key == f"payment.charge:acme:run-1.charge:{int(started.timestamp())}"
    same_instant = started.astimezone(timezone(timedelta(hours=2)))
    assert step_key("payment.charge", "acme", "run-1", "charge", same_instant) == key
    assert step_key("payment.refund", "acme", "run-1", "charge", started) != key
    assert step_key("payment.charge", "acme", "run-1", "charge2", started) != key
    assert step_key("payment.charge", "globex", "run-1", "charge", started) != key


def test_idempotency_key_parts_cannot_shift_and_parse_back() -> None:
    started = datetime(2026, 3, 1, tzinfo=UTC)
    key = step_key("crm.update_lead_status", "acme", "run-1", "a:b%c", started)
    assert key.count(":") == 3
    parsed = IdempotencyKey.parse(key)
    assert parsed.resource_id == "run-1.a:b%c"
    assert str(parsed) == key
    with pytest.raises(ValueError, match="timezone"):
        step_key("mail.send", "acme", "run-1", "s", datetime(2026, 3, 1))
    with pytest.raises(ValueError, match="not an idempotency key"):
        IdempotencyKey.parse("a:b:c")
