"""A CRM sandbox over HTTP: leads whose status changes keep a history that can be reverted.

Endpoints (JSON bodies, ``Authorization: Bearer <api key>`` when the sandbox has one; an
``Idempotency-Key`` header on a POST or PATCH replays the first answer for the same request
and gives 409 for a different one):

- ``POST /v1/leads`` ``{email, name?, company?, source?, status?, metadata?}`` → 201 lead
  with ``change``, the creation's history entry;
- ``GET /v1/leads/{id}`` → lead;
- ``PATCH /v1/leads/{id}`` ``{status}`` → the lead and ``change``, the new history entry
  (``null`` when the status was already that);
- ``PATCH /v1/leads/{id}`` ``{reverts: change_id}`` → restores the status that change replaced
  (a lead's creation reverts to ``archived``), once: 409 ``change_already_reverted`` after
  that, 409 ``change_superseded`` when the status moved on since.
"""

from __future__ import annotations

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

STATUSES = frozenset({"new", "contacted", "qualified", "unqualified", "converted", "archived"})
ARCHIVED = "archived"
Result = tuple[int, JsonObject]


def _error(status: int, code: str, message: str) -> Result:
    return status, {"error": {"type": "invalid_request_error", "code": code, "message": message}}


class CrmSandbox(HttpSandbox):
    """The CRM; see the module docstring for its API."""

    def __init__(self, *, api_key: str = "") -> None:
        """Require ``api_key`` as a bearer token when given."""
        app = web.Application(middlewares=[self._guard])
        app.add_routes(
            [
                web.post("/v1/leads", self._create),
                web.get("/v1/leads/{id}", self._get),
                web.patch("/v1/leads/{id}", self._update),
            ]
        )
        super().__init__(app)
        self.api_key = api_key
        self.leads: dict[str, JsonObject] = {}
        self.requests = 0
        self._keys = IdempotencyStore()
        self._faults: list[int] = []

    def fail_next(self, count: int, status: int = 503) -> None:
        """Make the next ``count`` API calls fail with ``status``."""
        self._faults = [status] * count

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests += 1
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return error_response(401, "authentication_error", "invalid_api_key", "Invalid API key")
        if self._faults:
            status = self._faults.pop(0)
            return error_response(status, "api_error", "sandbox_fault", "Injected failure")
        return await handler(request)  # type: ignore[no-any-return]

    async def _idempotent(self, request: web.Request, work: Any) -> web.Response:
        body = await json_body(request)
        key = request.headers.get(IDEMPOTENCY_HEADER, "")
        if not key:
            status, payload = await work(body)
            return web.json_response(payload, status=status)
        fingerprint = IdempotencyStore.fingerprint(request, body)
        return await self._keys.run(key, fingerprint, lambda: work(body))

    async def _create(self, request: web.Request) -> web.Response:
        return await self._idempotent(request, self._create_lead)

    async def _create_lead(self, body: JsonObject) -> Result:
        email, status = body.get("email"), body.get("status", "new")
        if not isinstance(email, str) or "@" not in email:
            return _error(400, "parameter_invalid", "email must be an email address")
        if status not in STATUSES:
            return _error(400, "parameter_invalid", f"status must be one of {sorted(STATUSES)}")
        now = int(time.time())
        lead: JsonObject = {
            "id": new_id("lead"), "object": "lead", "email": email,
            "name": str(body.get("name", "")), "company": str(body.get("company", "")),
            "source": str(body.get("source", "")), "status": status,
            "metadata": dict(body.get("metadata") or {}),
            "created": now, "updated": now, "history": [],
        }  # fmt: skip
        change = self._record(lead, None, status)
        self.leads[lead["id"]] = lead
        return 201, {**lead, "change": change}

    async def _get(self, request: web.Request) -> web.Response:
        lead = self.leads.get(request.match_info["id"])
        if lead is None:
            return error_response(404, "invalid_request_error", "resource_missing", "No such lead")
        return web.json_response(lead)

    async def _update(self, request: web.Request) -> web.Response:
        lead_id = request.match_info["id"]

        async def work(body: JsonObject) -> Result:
            lead = self.leads.get(lead_id)
            if lead is None:
                return _error(404, "resource_missing", f"No such lead: '{lead_id}'")
            if "reverts" in body:
                return self._revert(lead, str(body["reverts"]))
            status = body.get("status")
            if status not in STATUSES:
                return _error(400, "parameter_invalid", f"status must be one of {sorted(STATUSES)}")
            change = (
                None if status == lead["status"] else self._record(lead, lead["status"], status)
            )
            return 200, {**lead, "change": change}

        return await self._idempotent(request, work)

    def _revert(self, lead: JsonObject, change_id: str) -> Result:
        history: list[JsonObject] = lead["history"]
        entry = next((item for item in history if item["change_id"] == change_id), None)
        if entry is None:
            return _error(400, "change_missing", f"No change {change_id!r} on this lead")
        if entry["reverted_by"]:
            return _error(409, "change_already_reverted", "This change was already reverted")
        if lead["status"] != entry["to_status"]:
            return _error(409, "change_superseded", "The status changed again since")
        previous = entry["from_status"] or ARCHIVED
        change = self._record(lead, lead["status"], previous, reverts=change_id)
        entry["reverted_by"] = change["change_id"]
        return 200, {**lead, "change": change}

    @staticmethod
    def _record(
        lead: JsonObject, before: str | None, after: str, *, reverts: str = ""
    ) -> JsonObject:
        change: JsonObject = {
            "change_id": new_id("chg"), "from_status": before, "to_status": after,
            "changed_at": time.time(), "reverts": reverts, "reverted_by": "",
        }  # fmt: skip
        lead["history"].append(change)
        lead["status"], lead["updated"] = after, int(time.time())
        return dict(change)


def main() -> None:
    """``python -m services.sandbox.crm --port P``."""
    parser = cli("CRM sandbox (HTTP).")
    parser.add_argument("--api-key", default="", help="require this bearer key")
    args = parser.parse_args()
    serve(CrmSandbox(api_key=args.api_key), args.host, args.port, "crm")


if __name__ == "__main__":
    main()
