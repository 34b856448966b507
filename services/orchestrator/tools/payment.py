"""Payment tools: charge, capture and refund at the payment provider over HTTP.

Every call carries the step's idempotency key as ``Idempotency-Key``, so a retried or replayed
charge is made once. Charges carry the tenant in their metadata and a tenant can only
capture or refund its own. Refund (the compensation of charge and capture) is idempotent:
refunding a refunded or never-succeeded charge is a successful no-op.
"""

from __future__ import annotations

from datetime import timedelta

from services.kit import errors
from services.orchestrator.tools.http import JsonClient, provider_code
from services.orchestrator.tools.spec import (
    COMPENSATABLE,
    IRREVERSIBLE,
    JsonObject,
    ToolFn,
    obj,
    tool_spec,
)
from supportmesh.spec.v1 import tool_pb2

DEPENDENCY = "payment"
_CHARGE_ID = {"type": "string", "minLength": 1, "maxLength": 255}
_CENTS = {"type": "integer", "minimum": 1}
_CHARGE_OUT = obj(
    {
        "charge_id": _CHARGE_ID,
        "status": {"type": "string", "enum": ["succeeded", "failed"]},
        "amount_cents": _CENTS,
        "currency": {"type": "string"},
        "customer_id": {"type": "string"},
        "captured": {"type": "boolean"},
        "refunded": {"type": "boolean"},
        "amount_refunded_cents": {"type": "integer", "minimum": 0},
    },
    ("charge_id", "status", "amount_cents", "currency", "captured", "refunded"),
)
_RETENTION = timedelta(hours=24)


def specs() -> list[tool_pb2.ToolSpec]:
    """The payment tools' specs."""
    charge_in = obj(
        {
            "amount_cents": _CENTS,
            "currency": {"type": "string", "pattern": "^[A-Za-z]{3}$"},
            "customer_id": {"type": "string", "minLength": 1, "maxLength": 255},
            "payment_method": {"type": "string", "minLength": 1, "maxLength": 255},
            "capture": {"type": "boolean"},
            "order_id": {"type": "string", "maxLength": 255},
            "description": {"type": "string", "maxLength": 1000},
        },
        ("amount_cents", "currency", "customer_id"),
    )
    capture_in = obj(
        {"charge_id": _CHARGE_ID, "amount_cents": _CENTS}, ("charge_id",), closed=False
    )
    refund_in = obj(
        {
            "charge_id": _CHARGE_ID,
            "refund_amount_cents": _CENTS,
            "reason": {"type": "string", "maxLength": 500},
        },
        ("charge_id",),
        closed=False,
    )
    refund_out = obj(
        {
            "charge_id": _CHARGE_ID,
            "refund_id": {"type": "string"},
            "refunded": {"type": "boolean"},
            "amount_refunded_cents": {"type": "integer", "minimum": 0},
            "no_op": {"type": "boolean"},
        },
        ("charge_id", "refund_id", "refunded", "amount_refunded_cents", "no_op"),
    )
    return [
        _spec(
            "payment.charge",
            "Charge a customer's payment method (authorize only when capture is false).",
            charge_in, _CHARGE_OUT, COMPENSATABLE, "payment.refund",
        ),
        _spec(
            "payment.capture",
            "Capture an authorized charge, in full or in part.",
            capture_in, _CHARGE_OUT, COMPENSATABLE, "payment.refund",
        ),
        _spec(
            "payment.refund",
            "Refund a charge (what is left of it by default); refunding twice changes nothing.",
            refund_in, refund_out, IRREVERSIBLE,
        ),
    ]  # fmt: skip


def _spec(
    name: str,
    description: str,
    input_schema: JsonObject,
    output_schema: JsonObject,
    side_effect: tool_pb2.SideEffect.ValueType,
    compensation: str = "",
) -> tool_pb2.ToolSpec:
    # Payments are on the critical path: the seed's 5 s timeout.
    return tool_spec(
        name, description, input_schema=input_schema, output_schema=output_schema,
        side_effect=side_effect, compensation=compensation, timeout_s=5.0,
        retention=_RETENTION, max_concurrency=8,
    )  # fmt: skip


def _charge_out(charge: JsonObject) -> JsonObject:
    return {
        "charge_id": charge["id"],
        "status": charge["status"],
        "amount_cents": charge["amount"],
        "currency": str(charge["currency"]).upper(),
        "customer_id": charge["customer"],
        "captured": charge["captured"],
        "refunded": charge["refunded"],
        "amount_refunded_cents": charge["amount_refunded"],
    }


class PaymentTools:
    """The payment tools' implementations over one provider client."""

    def __init__(self, client: JsonClient) -> None:
        """Call the provider through ``client``."""
        self._client = client

    def bindings(self) -> dict[str, ToolFn]:
        """Implementation by tool name."""
        return {
            "payment.charge": self.charge,
            "payment.capture": self.capture,
            "payment.refund": self.refund,
        }

    async def charge(self, tenant_id: str, data: JsonObject, key: str) -> JsonObject:
        """Create a charge; a decline is FAILED_PRECONDITION with the provider's decline code."""
        body = {
            "amount": data["amount_cents"],
            "currency": str(data["currency"]).lower(),
            "customer": data["customer_id"],
            "source": data.get("payment_method", "tok_visa"),
            "capture": data.get("capture", True),
            "description": data.get("description", ""),
            "metadata": {"tenant_id": tenant_id, "order_id": data.get("order_id", "")},
        }
        charge = await self._client.request("POST", "/v1/charges", body=body, idempotency_key=key)
        return _charge_out(charge)

    async def capture(self, tenant_id: str, data: JsonObject, key: str) -> JsonObject:
        """Capture a charge of the tenant; capturing a captured charge returns it unchanged."""
        # The POST goes out even when the charge looks captured: under a replayed key the
        # provider answers with the original capture, so a replay returns the same output.
        charge = await self._own_charge(tenant_id, str(data["charge_id"]))
        body = {"amount": data["amount_cents"]} if "amount_cents" in data else {}
        path = f"/v1/charges/{charge['id']}/capture"
        try:
            charge = await self._client.request("POST", path, body=body, idempotency_key=key)
        except errors.InvalidArgument as error:
            if provider_code(error) != "charge_already_captured":
                raise
            charge = await self._own_charge(tenant_id, str(charge["id"]))
        return _charge_out(charge)

    async def refund(self, tenant_id: str, data: JsonObject, key: str) -> JsonObject:
        """Refund a charge of the tenant; nothing left to refund is a successful no-op."""
        charge = await self._own_charge(tenant_id, str(data["charge_id"]))
        body: JsonObject = {"charge": charge["id"], "reason": data.get("reason", "")}
        if "refund_amount_cents" in data:
            body["amount"] = data["refund_amount_cents"]
        try:
            refund = await self._client.request(
                "POST", "/v1/refunds", body=body, idempotency_key=key
            )
        except errors.InvalidArgument as error:
            if provider_code(error) not in ("charge_already_refunded", "charge_not_refundable"):
                raise
            charge = await self._own_charge(tenant_id, str(charge["id"]))
            return _refund_out(charge, "", no_op=True)
        charge = await self._own_charge(tenant_id, str(charge["id"]))
        return _refund_out(charge, str(refund["id"]), no_op=False)

    async def _own_charge(self, tenant_id: str, charge_id: str) -> JsonObject:
        """The charge, or NOT_FOUND when it is not this tenant's."""
        charge = await self._client.request("GET", f"/v1/charges/{charge_id}")
        metadata = charge.get("metadata") or {}
        if metadata.get("tenant_id") != tenant_id:
            raise errors.NotFound(
                f"charge {charge_id} not found", metadata={"charge_id": charge_id}
            )
        return charge


def _refund_out(charge: JsonObject, refund_id: str, *, no_op: bool) -> JsonObject:
    return {
        "charge_id": charge["id"],
        "refund_id": refund_id,
        "refunded": charge["refunded"],
        "amount_refunded_cents": charge["amount_refunded"],
        "no_op": no_op,
    }
