"""payment.charge / capture / refund over HTTP against the payment sandbox."""

from __future__ import annotations

import pytest

from services.kit import errors
from services.orchestrator.tools import ToolRegistry
from services.sandbox.payment import DECLINED_SOURCE
from tests.integration.tools.conftest import Sandboxes, key

CHARGE = {"amount_cents": 4200, "currency": "usd", "customer_id": "cus_7", "order_id": "o-1"}


async def test_charge_replayed_with_its_key_charges_once(
    registry: ToolRegistry, sandboxes: Sandboxes, tenant: str
) -> None:
    same = key("payment.charge", tenant)
    first = await registry.call("payment.charge", tenant, CHARGE, same)
    second = await registry.call("payment.charge", tenant, CHARGE, same)
    assert first == second
    assert (first["status"], first["captured"], first["currency"]) == ("succeeded", True, "USD")
    mine = [c for c in sandboxes.payment.charges.values() if c["metadata"]["tenant_id"] == tenant]
    assert len(mine) == 1


async def test_refund_compensates_a_charge_idempotently(
    registry: ToolRegistry, sandboxes: Sandboxes, tenant: str
) -> None:
    charge = await registry.call("payment.charge", tenant, CHARGE, key("payment.charge", tenant))
    refund_key = key("payment.refund", tenant)
    refunded = await registry.call("payment.refund", tenant, charge, refund_key)
    assert refunded["refunded"]
    assert refunded["amount_refunded_cents"] == 4200
    assert not refunded["no_op"]
    assert await registry.call("payment.refund", tenant, charge, refund_key) == refunded
    again = await registry.call("payment.refund", tenant, charge, key("payment.refund", tenant))
    assert again["no_op"]
    assert again["amount_refunded_cents"] == 4200
    refunds = [r for r in sandboxes.payment.refunds.values() if r["charge"] == charge["charge_id"]]
    assert len(refunds) == 1


async def test_authorize_then_capture_then_refund(registry: ToolRegistry, tenant: str) -> None:
    authorized = await registry.call(
        "payment.charge", tenant, {**CHARGE, "capture": False}, key("payment.charge", tenant)
    )
    assert not authorized["captured"]
    capture_key = key("payment.capture", tenant)
    captured = await registry.call("payment.capture", tenant, authorized, capture_key)
    assert captured["captured"]
    assert await registry.call("payment.capture", tenant, authorized, capture_key) == captured
    other_key = key("payment.capture", tenant)
    assert await registry.call("payment.capture", tenant, authorized, other_key) == captured
    refunded = await registry.call(
        "payment.refund", tenant, captured, key("payment.refund", tenant)
    )
    assert refunded["refunded"]


async def test_a_decline_fails_at_once_and_refunding_it_is_a_no_op(
    registry: ToolRegistry, sandboxes: Sandboxes, tenant: str
) -> None:
    before = sandboxes.payment.requests
    with pytest.raises(errors.FailedPrecondition) as raised:
        await registry.call(
            "payment.charge",
            tenant,
            {**CHARGE, "payment_method": DECLINED_SOURCE},
            key("payment.charge", tenant),
        )
    assert raised.value.metadata["provider_code"] == "card_declined"
    assert sandboxes.payment.requests == before + 1  # not retried
    declined = next(
        charge for charge in sandboxes.payment.charges.values()
        if charge["metadata"]["tenant_id"] == tenant
    )  # fmt: skip
    refund = await registry.call(
        "payment.refund", tenant, {"charge_id": declined["id"]}, key("payment.refund", tenant)
    )
    assert refund["no_op"]


async def test_transient_provider_errors_are_retried_under_the_same_key(
    registry: ToolRegistry, sandboxes: Sandboxes, tenant: str
) -> None:
    sandboxes.payment.fail_next(2)
    charge = await registry.call("payment.charge", tenant, CHARGE, key("payment.charge", tenant))
    assert charge["status"] == "succeeded"
    mine = [c for c in sandboxes.payment.charges.values() if c["metadata"]["tenant_id"] == tenant]
    assert len(mine) == 1


async def test_a_tenant_cannot_refund_or_capture_another_tenants_charge(
    registry: ToolRegistry, tenant: str, other_tenant: str
) -> None:
    charge = await registry.call(
        "payment.charge", tenant, {**CHARGE, "capture": False}, key("payment.charge", tenant)
    )
    for tool in ("payment.refund", "payment.capture"):
        with pytest.raises(errors.NotFound):
            await registry.call(tool, other_tenant, charge, key(tool, other_tenant))
