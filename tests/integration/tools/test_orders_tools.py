"""orders.create / get / cancel against the real PostgreSQL under row-level security."""

from __future__ import annotations

import asyncpg
import pytest

from services.kit import errors
from services.orchestrator.tools import ToolRegistry
from supportmesh.common.v1 import errors_pb2
from tests.integration.tools.conftest import key

ORDER = {
    "customer_id": "cus_1",
    "customer_email": "ada@example.com",
    "currency": "eur",
    "items": [
        {"sku": "shoe-42", "name": "Shoe", "quantity": 2, "unit_price_cents": 4500},
        {"sku": "sock", "quantity": 3, "unit_price_cents": 300},
    ],
}


async def test_create_get_and_cancel_an_order(registry: ToolRegistry, tenant: str) -> None:
    created = await registry.call(
        "orders.create", tenant, {**ORDER, "reference": "A-1"}, key("orders.create", tenant)
    )
    assert (created["status"], created["total_cents"], created["currency"]) == (
        "CREATED", 9900, "EUR",
    )  # fmt: skip
    assert await registry.call("orders.get", tenant, {"order_id": created["order_id"]}) == created
    assert await registry.call("orders.get", tenant, {"reference": "A-1"}) == created
    cancel_key = key("orders.cancel", tenant)
    cancelled = await registry.call(
        "orders.cancel", tenant, {**created, "reason": "customer asked"}, cancel_key
    )
    assert (cancelled["status"], cancelled["cancel_reason"]) == ("CANCELLED", "customer asked")
    # Compensation is idempotent: again with the same key or a new one changes nothing.
    assert await registry.call("orders.cancel", tenant, created, cancel_key) == cancelled
    assert await registry.call("orders.cancel", tenant, created, key("orders.cancel", tenant)) == (
        cancelled
    )


async def test_replaying_create_returns_the_same_single_order(
    registry: ToolRegistry, tenant: str, admin_db: asyncpg.Connection
) -> None:
    same = key("orders.create", tenant)
    first = await registry.call("orders.create", tenant, ORDER, same)
    second = await registry.call("orders.create", tenant, ORDER, same)
    assert first == second
    count = await admin_db.fetchval("SELECT count(*) FROM app.orders WHERE tenant_id = $1", tenant)
    assert count == 1
    with pytest.raises(errors.AlreadyExists):
        await registry.call("orders.create", tenant, {**ORDER, "currency": "usd"}, same)


async def test_orders_are_invisible_to_other_tenants(
    registry: ToolRegistry, tenant: str, other_tenant: str
) -> None:
    created = await registry.call("orders.create", tenant, ORDER, key("orders.create", tenant))
    with pytest.raises(errors.NotFound):
        await registry.call("orders.get", other_tenant, {"order_id": created["order_id"]})
    with pytest.raises(errors.NotFound):
        await registry.call(
            "orders.cancel", other_tenant, created, key("orders.cancel", other_tenant)
        )
    mine = await registry.call("orders.get", tenant, {"order_id": created["order_id"]})
    assert mine["status"] == "CREATED"


async def test_a_shipped_order_cannot_be_cancelled(
    registry: ToolRegistry, tenant: str, admin_db: asyncpg.Connection
) -> None:
    created = await registry.call("orders.create", tenant, ORDER, key("orders.create", tenant))
    await admin_db.execute(
        "UPDATE app.orders SET status = 'SHIPPED' WHERE order_id = $1::uuid", created["order_id"]
    )
    with pytest.raises(errors.FailedPrecondition) as raised:
        await registry.call("orders.cancel", tenant, created, key("orders.cancel", tenant))
    assert raised.value.reason == errors_pb2.ERROR_REASON_INVALID_STATE


async def test_bad_input_and_missing_keys_are_refused_before_the_call(
    registry: ToolRegistry, tenant: str
) -> None:
    with pytest.raises(errors.InvalidArgument, match="idempotency key"):
        await registry.call("orders.create", tenant, ORDER)
    with pytest.raises(errors.InvalidArgument) as raised:
        await registry.call("orders.get", tenant, {"order_id": "not-a-uuid"})
    assert raised.value.field == "input.order_id"
    with pytest.raises(errors.FailedPrecondition) as unknown:
        await registry.call("orders.delete", tenant, {})
    assert unknown.value.reason == errors_pb2.ERROR_REASON_TOOL_UNKNOWN
