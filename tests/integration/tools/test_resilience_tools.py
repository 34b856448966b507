"""The payment provider failing: retries, then the shared circuit breaker opens and heals."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from services.kit import errors
from services.kit.resilience import BreakerState, Resilience
from supportmesh.common.v1 import errors_pb2
from tests.integration.tools.conftest import FakeClock, RegistryFactory, Sandboxes, key, no_sleep

CHARGE = {"amount_cents": 900, "currency": "usd", "customer_id": "cus_cb"}


async def test_breaker_opens_against_a_failing_provider_and_closes_when_it_heals(
    make_registry: RegistryFactory, sandboxes: Sandboxes, tenant: str
) -> None:
    clock, metrics = FakeClock(), CollectorRegistry()
    registry = make_registry(Resilience(metrics, clock=clock, sleep=no_sleep))
    provider = sandboxes.payment
    provider.fail_next(1000)
    try:
        before = provider.requests
        with pytest.raises(errors.Unavailable) as first:
            await registry.call("payment.charge", tenant, CHARGE, key("payment.charge", tenant))
        assert first.value.reason == errors_pb2.ERROR_REASON_DEPENDENCY_UNAVAILABLE
        assert provider.requests == before + 3  # max_attempts
        with pytest.raises(errors.Unavailable) as second:
            await registry.call("payment.charge", tenant, CHARGE, key("payment.charge", tenant))
        assert second.value.reason == errors_pb2.ERROR_REASON_CIRCUIT_OPEN
        assert provider.requests == before + 5  # opened after the 5th consecutive failure
        with pytest.raises(errors.Unavailable) as refund:  # the breaker is the provider's
            await registry.call(
                "payment.refund", tenant, {"charge_id": "ch_x"}, key("payment.refund", tenant)
            )
        assert refund.value.reason == errors_pb2.ERROR_REASON_CIRCUIT_OPEN
        assert provider.requests == before + 5
        breaker = registry.get("payment.charge").adapter.breaker
        assert breaker.state is BreakerState.OPEN
        assert metrics.get_sample_value("circuit_breaker_state", {"dependency": "payment"}) == 2
    finally:
        provider.fail_next(0)
    clock.now += 60
    charge = await registry.call("payment.charge", tenant, CHARGE, key("payment.charge", tenant))
    assert charge["status"] == "succeeded"
    assert registry.get("payment.charge").adapter.breaker.state is BreakerState.CLOSED
    assert metrics.get_sample_value("tool_calls_total", {"tool": "payment.charge"}) == 3
    errors_seen = metrics.get_sample_value(
        "tool_errors_total", {"tool": "payment.charge", "code": "UNAVAILABLE"}
    )
    assert errors_seen == 2
    assert (
        metrics.get_sample_value("retry_total", {"tool": "payment.charge", "code": "UNAVAILABLE"})
        == 4
    )


async def test_other_dependencies_keep_working_while_one_circuit_is_open(
    make_registry: RegistryFactory, sandboxes: Sandboxes, tenant: str
) -> None:
    registry = make_registry(Resilience(CollectorRegistry(), clock=FakeClock(), sleep=no_sleep))
    sandboxes.crm.fail_next(1000)
    try:
        for _ in range(2):
            with pytest.raises(errors.Unavailable):
                await registry.call(
                    "crm.create_lead", tenant, {"email": "x@example.com"},
                    key("crm.create_lead", tenant),
                )  # fmt: skip
        assert registry.get("crm.create_lead").adapter.breaker.state is BreakerState.OPEN
    finally:
        sandboxes.crm.fail_next(0)
    charge = await registry.call("payment.charge", tenant, CHARGE, key("payment.charge", tenant))
    assert charge["status"] == "succeeded"
