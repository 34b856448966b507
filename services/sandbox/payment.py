"""A payment provider sandbox over HTTP: charges, captures, refunds, signed webhooks.

Endpoints (JSON bodies, ``Authorization: Bearer <api key>`` when the sandbox has one):

- ``POST /v1/charges`` ``{amount, currency, customer, source?, capture?, description?,
  metadata?}``, ``Idempotency-Key`` required;
- ``POST /v1/charges/{id}/capture`` ``{amount?}``, ``Idempotency-Key`` optional;
- ``POST /v1/refunds`` ``{charge, amount?, reason?}``, ``Idempotency-Key`` required;
- ``GET /v1/charges/{id}``, ``GET /v1/refunds/{id}``;
- ``POST /_sandbox/faults`` ``{count, status?}``: the next ``count`` API calls fail.
- ``GET /_sandbox/ledger``: every charge and refund made (for tests counting side effects).

A key reused with the same request replays the first answer (header ``Idempotent-Replayed``);
with another request it gets 409. Magic ``source`` tokens inject failures as real sandboxes
do: ``tok_chargeDeclined`` (402 card_declined), ``tok_timeout`` (answers after ``hang_s``
or at ``release_hung()``), ``tok_unavailable`` (503). Events (``charge.succeeded``,
``charge.failed``, ``charge.captured``, ``charge.refunded``) are posted, signed, to
``webhook_url``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from typing import Any

from aiohttp import web

from services.sandbox._http import (
    IDEMPOTENCY_HEADER,
    HttpSandbox,
    IdempotencyStore,
    JsonObject,
    cli,
    error_response,
    json_body,
    new_id,
    serve,
)
from services.sandbox.webhooks import WebhookSender

DECLINED_SOURCE = "tok_chargeDeclined"
HANGING_SOURCE = "tok_timeout"
DOWN_SOURCE = "tok_unavailable"
_CURRENCY = re.compile(r"^[a-z]{3}$")
Result = tuple[int, JsonObject]


def _invalid(code: str, message: str, param: str | None = None) -> Result:
    extra = {"param": param} if param else {}
    return 400, {
        "error": {"type": "invalid_request_error", "code": code, "message": message, **extra}
    }


def _missing(kind: str, object_id: str) -> Result:
    message = f"No such {kind}: '{object_id}'"
    return 404, {
        "error": {"type": "invalid_request_error", "code": "resource_missing", "message": message}
    }


class PaymentSandbox(HttpSandbox):
    """The payment provider; see the module docstring for its API."""

    def __init__(
        self,
        *,
        api_key: str = "",
        webhook_url: str = "",
        webhook_secret: str = "",
        webhook_attempts: int = 5,
        webhook_backoff_s: float = 1.0,
        hang_s: float = 30.0,
    ) -> None:
        """Configure credentials, webhooks and how long ``tok_timeout`` hangs."""
        app = web.Application(middlewares=[self._guard])
        app.add_routes(
            [
                web.post("/v1/charges", self._create_charge),
                web.get("/v1/charges/{id}", self._get_charge),
                web.post("/v1/charges/{id}/capture", self._capture),
                web.post("/v1/refunds", self._create_refund),
                web.get("/v1/refunds/{id}", self._get_refund),
                web.post("/_sandbox/faults", self._set_faults),
                web.get("/_sandbox/ledger", self._ledger),
            ]
        )
        super().__init__(app)
        self.api_key = api_key
        self.hang_s = hang_s
        self._unhang = asyncio.Event()
        self.hanging = asyncio.Event()
        """Set once a request hangs on ``tok_timeout``."""
        self.charges: dict[str, JsonObject] = {}
        self.refunds: dict[str, JsonObject] = {}
        self.events: list[JsonObject] = []
        self.requests = 0
        self._faults: list[int] = []
        self._keys = IdempotencyStore()
        self.webhooks: WebhookSender | None = None
        if webhook_url:
            self.webhooks = WebhookSender(
                webhook_url, webhook_secret, webhook_attempts, webhook_backoff_s
            )

    def fail_next(self, count: int, status: int = 503) -> None:
        """Make the next ``count`` API calls fail with ``status``."""
        self._faults = [status] * count

    def release_hung(self) -> None:
        """Let every request hanging on ``tok_timeout`` go on now."""
        self._unhang.set()

    async def close(self) -> None:
        """Stop serving and abandon pending webhook deliveries."""
        self.release_hung()
        if self.webhooks is not None:
            await self.webhooks.close()
        await super().close()

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith("/v1/"):
            return await handler(request)  # type: ignore[no-any-return]
        self.requests += 1
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return error_response(401, "authentication_error", "invalid_api_key", "Invalid API key")
        if self._faults:
            status = self._faults.pop(0)
            return error_response(status, "api_error", "sandbox_fault", "Injected failure")
        return await handler(request)  # type: ignore[no-any-return]

    async def _idempotent(
        self, request: web.Request, body: JsonObject, work: Any, *, required: bool
    ) -> web.Response:
        key = request.headers.get(IDEMPOTENCY_HEADER, "")
        if not key:
            if required:
                status, payload = _invalid(
                    "idempotency_key_required", f"the {IDEMPOTENCY_HEADER} header is required"
                )
                return web.json_response(payload, status=status)
            status, payload = await work(body)
            return web.json_response(payload, status=status)
        fingerprint = IdempotencyStore.fingerprint(request, body)
        return await self._keys.run(key, fingerprint, lambda: work(body))

    async def _create_charge(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        return await self._idempotent(request, body, self._charge, required=True)

    async def _charge(self, body: JsonObject) -> Result:
        amount, currency = body.get("amount"), str(body.get("currency", "")).lower()
        customer, source = body.get("customer"), body.get("source", "tok_visa")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            return _invalid(
                "parameter_invalid_integer", "amount must be a positive integer", "amount"
            )
        if not _CURRENCY.match(currency):
            return _invalid("parameter_invalid", "currency must be a 3-letter ISO code", "currency")
        if not isinstance(customer, str) or not customer:
            return _invalid("parameter_missing", "customer is required", "customer")
        if source == DOWN_SOURCE:
            return 503, {
                "error": {
                    "type": "api_error",
                    "code": "processing_error",
                    "message": "Try again later",
                }
            }
        if source == HANGING_SOURCE:
            self.hanging.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.hang_s):
                    await self._unhang.wait()
        declined = source == DECLINED_SOURCE
        capture = bool(body.get("capture", True))
        charge: JsonObject = {
            "id": new_id("ch"), "object": "charge", "amount": amount, "currency": currency,
            "customer": customer, "description": str(body.get("description", "")),
            "metadata": dict(body.get("metadata") or {}),
            "status": "failed" if declined else "succeeded",
            "captured": capture and not declined, "amount_refunded": 0, "refunded": False,
            "created": int(time.time()),
        }  # fmt: skip
        self.charges[charge["id"]] = charge
        if declined:
            self._emit("charge.failed", charge)
            error = {"type": "card_error", "code": "card_declined",
                     "decline_code": "generic_decline", "message": "Your card was declined.",
                     "charge": charge["id"]}  # fmt: skip
            return 402, {"error": error}
        self._emit("charge.succeeded", charge)
        return 200, dict(charge)

    async def _get_charge(self, request: web.Request) -> web.Response:
        charge = self.charges.get(request.match_info["id"])
        if charge is None:
            status, body = _missing("charge", request.match_info["id"])
            return web.json_response(body, status=status)
        return web.json_response(charge)

    async def _capture(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        charge_id = request.match_info["id"]

        async def work(payload: JsonObject) -> Result:
            charge = self.charges.get(charge_id)
            if charge is None:
                return _missing("charge", charge_id)
            if charge["status"] != "succeeded" or charge["refunded"]:
                return _invalid("charge_not_capturable", f"Charge {charge_id} cannot be captured")
            if charge["captured"]:
                return _invalid(
                    "charge_already_captured", f"Charge {charge_id} has already been captured."
                )
            amount = payload.get("amount", charge["amount"])
            if not isinstance(amount, int) or not 0 < amount <= charge["amount"]:
                return _invalid(
                    "amount_too_large", "amount exceeds the authorized amount", "amount"
                )
            # Capturing less than authorized releases the rest, recorded as refunded.
            charge.update(captured=True, amount_refunded=charge["amount"] - amount)
            self._emit("charge.captured", charge)
            return 200, dict(charge)

        return await self._idempotent(request, body, work, required=False)

    async def _create_refund(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        return await self._idempotent(request, body, self._refund, required=True)

    async def _refund(self, body: JsonObject) -> Result:
        charge_id = str(body.get("charge", ""))
        charge = self.charges.get(charge_id)
        if charge is None:
            return _missing("charge", charge_id)
        if charge["status"] != "succeeded":
            return _invalid("charge_not_refundable", f"Charge {charge_id} did not succeed")
        remaining = charge["amount"] - charge["amount_refunded"]
        if charge["refunded"] or remaining <= 0:
            return _invalid(
                "charge_already_refunded", f"Charge {charge_id} has already been refunded."
            )
        amount = body.get("amount", remaining)
        if not isinstance(amount, int) or isinstance(amount, bool) or not 0 < amount <= remaining:
            return _invalid("amount_too_large", "amount exceeds what is left to refund", "amount")
        refund: JsonObject = {
            "id": new_id("re"), "object": "refund", "charge": charge_id, "amount": amount,
            "currency": charge["currency"], "reason": str(body.get("reason", "")),
            "status": "succeeded", "created": int(time.time()),
        }  # fmt: skip
        self.refunds[refund["id"]] = refund
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
        self._emit("charge.refunded", charge)
        return 200, dict(refund)

    async def _get_refund(self, request: web.Request) -> web.Response:
        refund = self.refunds.get(request.match_info["id"])
        if refund is None:
            status, body = _missing("refund", request.match_info["id"])
            return web.json_response(body, status=status)
        return web.json_response(refund)

    async def _ledger(self, request: web.Request) -> web.Response:
        # Every charge and refund made, for tests counting side effects from outside.
        return web.json_response(
            {"charges": list(self.charges.values()), "refunds": list(self.refunds.values())}
        )

    async def _set_faults(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        self.fail_next(int(body.get("count", 0)), int(body.get("status", 503)))
        return web.json_response({"pending_faults": len(self._faults)})

    def _emit(self, kind: str, obj: JsonObject) -> None:
        event = {"id": new_id("evt"), "object": "event", "type": kind,
                 "created": int(time.time()), "data": {"object": dict(obj)}}  # fmt: skip
        self.events.append(event)
        if self.webhooks is not None:
            self.webhooks.send(event)


def main() -> None:
    """``python -m services.sandbox.payment --port P``."""
    parser = cli("Payment provider sandbox (HTTP).")
    parser.add_argument("--api-key", default="", help="require this bearer key")
    parser.add_argument("--webhook-url", default="", help="where to post signed events")
    parser.add_argument("--webhook-secret", default="", help="HMAC secret of the signatures")
    args = parser.parse_args()
    sandbox = PaymentSandbox(
        api_key=args.api_key, webhook_url=args.webhook_url, webhook_secret=args.webhook_secret
    )
    serve(sandbox, args.host, args.port, "payment")


if __name__ == "__main__":
    main()
