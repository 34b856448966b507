"""Order tools: create, get and cancel a tenant's orders in PostgreSQL (``app.orders``).

Every statement runs in a tenant transaction, so row-level security admits only the
calling tenant's orders. Creation is idempotent on ``(tenant_id, request_id)``: a replay
returns the order it made, a reused key with another input is ALREADY_EXISTS. Cancelling
(the compensation of creation) is idempotent: a cancelled order stays as it is.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import db, errors
from services.orchestrator.tools.spec import (
    COMPENSATABLE,
    IRREVERSIBLE,
    READ_ONLY,
    JsonObject,
    ToolFn,
    obj,
    tool_spec,
)
from supportmesh.spec.v1 import tool_pb2

DEPENDENCY = "orders"
STATUSES = ["CREATED", "PAID", "SHIPPED", "DELIVERED", "CANCELLED"]
_CANCELLABLE = ("CREATED", "PAID")
_INSERT = text(
    "INSERT INTO app.orders (tenant_id, reference, customer_id, customer_email, items, "
    "total_cents, currency, request_id, request_fingerprint) VALUES (:tenant, :reference, "
    ":customer_id, :customer_email, CAST(:items AS jsonb), :total, :currency, :key, :fp) "
    "ON CONFLICT (tenant_id, request_id) DO NOTHING RETURNING *"
)
_BY_KEY = text("SELECT * FROM app.orders WHERE request_id = :key")
_BY_ID = text("SELECT * FROM app.orders WHERE order_id = CAST(:order_id AS uuid)")
_BY_REFERENCE = text("SELECT * FROM app.orders WHERE reference = :reference")
_CANCEL = text(
    "UPDATE app.orders SET status = 'CANCELLED', cancel_reason = :reason, cancelled_at = now(), "
    "updated_at = now() WHERE order_id = CAST(:order_id AS uuid) "
    "AND status IN ('CREATED', 'PAID') RETURNING *"
)
_ORDER_ID = {"type": "string", "format": "uuid"}
_REFERENCE = {"type": "string", "minLength": 1, "maxLength": 100}
_ITEM = obj(
    {
        "sku": {"type": "string", "minLength": 1, "maxLength": 100},
        "name": {"type": "string", "maxLength": 200},
        "quantity": {"type": "integer", "minimum": 1, "maximum": 10_000},
        "unit_price_cents": {"type": "integer", "minimum": 0},
    },
    ("sku", "quantity", "unit_price_cents"),
)
_ORDER = obj(
    {
        "order_id": _ORDER_ID,
        "reference": {"type": "string"},
        "customer_id": {"type": "string"},
        "customer_email": {"type": "string"},
        "items": {"type": "array", "items": _ITEM},
        "total_cents": {"type": "integer", "minimum": 0},
        "currency": {"type": "string"},
        "status": {"type": "string", "enum": STATUSES},
        "cancel_reason": {"type": "string"},
        "created_at": {"type": "string"},
        "cancelled_at": {"type": "string"},
    },
    ("order_id", "customer_id", "items", "total_cents", "currency", "status", "created_at"),
)


def specs() -> list[tool_pb2.ToolSpec]:
    """The order tools' specs."""
    create_in = obj(
        {
            "customer_id": {"type": "string", "minLength": 1, "maxLength": 255},
            "customer_email": {"type": "string", "format": "email", "maxLength": 320},
            "items": {"type": "array", "items": _ITEM, "minItems": 1, "maxItems": 100},
            "currency": {"type": "string", "pattern": "^[A-Za-z]{3}$"},
            "reference": _REFERENCE,
        },
        ("customer_id", "items", "currency"),
    )
    get_in = obj({"order_id": _ORDER_ID, "reference": _REFERENCE})
    cancel_in = obj(
        {"order_id": _ORDER_ID, "reason": {"type": "string", "maxLength": 500}},
        ("order_id",),
        closed=False,
    )
    return [
        _spec("orders.create", "Place an order for a customer.", create_in, COMPENSATABLE),
        _spec("orders.get", "Look up an order by id or by reference.", get_in, READ_ONLY),
        _spec("orders.cancel", "Cancel an order that has not shipped.", cancel_in, IRREVERSIBLE),
    ]


def _spec(
    name: str, description: str, input_schema: JsonObject, side: tool_pb2.SideEffect.ValueType
) -> tool_pb2.ToolSpec:
    return tool_spec(
        name, description, input_schema=input_schema, output_schema=_ORDER, side_effect=side,
        compensation="orders.cancel" if side == COMPENSATABLE else "", timeout_s=5.0,
        retention=timedelta(days=30), max_concurrency=16,
    )  # fmt: skip


def _fingerprint(data: JsonObject) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _out(row: Any) -> JsonObject:
    order: JsonObject = {
        "order_id": str(row.order_id),
        "reference": row.reference or "",
        "customer_id": row.customer_id,
        "customer_email": row.customer_email,
        "items": row.items,
        "total_cents": int(row.total_cents),
        "currency": row.currency,
        "status": row.status,
        "cancel_reason": row.cancel_reason,
        "created_at": _iso(row.created_at),
        "cancelled_at": _iso(row.cancelled_at),
    }
    return order


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value is not None else ""


class OrderTools:
    """The order tools' implementations over the services' database engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        """Run tenant transactions on ``engine``."""
        self._engine = engine

    def bindings(self) -> dict[str, ToolFn]:
        """Implementation by tool name."""
        return {"orders.create": self.create, "orders.get": self.get, "orders.cancel": self.cancel}

    async def create(self, tenant_id: str, data: JsonObject, key: str) -> JsonObject:
        """Insert the order once per idempotency key."""
        items = [dict(item) for item in data["items"]]
        params = {
            "tenant": tenant_id,
            "reference": data.get("reference"),
            "customer_id": data["customer_id"],
            "customer_email": data.get("customer_email", ""),
            "items": json.dumps(items),
            "total": sum(int(item["quantity"]) * int(item["unit_price_cents"]) for item in items),
            "currency": str(data["currency"]).upper(),
            "key": key,
            "fp": _fingerprint(data),
        }
        try:
            async with db.tenant_transaction(self._engine, tenant_id) as connection:
                row = (await connection.execute(_INSERT, params)).first()
                if row is None:
                    row = (await connection.execute(_BY_KEY, {"key": key})).one()
        except IntegrityError as error:
            raise errors.AlreadyExists(
                "an order with this reference already exists", field="reference"
            ) from error
        if row.request_fingerprint != params["fp"]:
            raise errors.AlreadyExists(
                "this idempotency key already created an order from a different input",
                field="idempotency_key",
            )
        return _out(row)

    async def get(self, tenant_id: str, data: JsonObject, key: str) -> JsonObject:
        """The order with ``order_id`` or ``reference``."""
        if "order_id" in data:
            query, params = _BY_ID, {"order_id": data["order_id"]}
        elif "reference" in data:
            query, params = _BY_REFERENCE, {"reference": data["reference"]}
        else:
            raise errors.InvalidArgument("order_id or reference is required", field="order_id")
        async with db.tenant_transaction(self._engine, tenant_id) as connection:
            row = (await connection.execute(query, params)).first()
        if row is None:
            raise errors.NotFound(
                "order not found", metadata={name: str(value) for name, value in params.items()}
            )
        return _out(row)

    async def cancel(self, tenant_id: str, data: JsonObject, key: str) -> JsonObject:
        """Cancel the order; an already cancelled order is returned unchanged."""
        params = {"order_id": data["order_id"], "reason": data.get("reason", "")}
        async with db.tenant_transaction(self._engine, tenant_id) as connection:
            row = (await connection.execute(_CANCEL, params)).first()
            if row is None:
                row = (await connection.execute(_BY_ID, params)).first()
        if row is None:
            raise errors.NotFound("order not found", metadata={"order": str(data["order_id"])})
        if row.status not in (*_CANCELLABLE, "CANCELLED"):
            raise errors.FailedPrecondition(
                f"an order that is {row.status} can no longer be cancelled",
                metadata={"status": row.status},
            )
        return _out(row)
