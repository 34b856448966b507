"""ext_authz answers: denials carry the gRPC status for every client kind; OK answers set
exactly the trusted headers; a failing gate refuses (fail closed)."""

from __future__ import annotations

import base64
from collections.abc import Mapping

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from google.rpc import error_details_pb2, status_pb2
from prometheus_client import CollectorRegistry

from services.edge.authn import CredentialKind, Principal
from services.edge.authz import trusted_headers
from services.edge.ext_authz import Authorizer, denial, percent_encode
from services.kit import context, errors, gateway
from supportmesh.common.v1 import errors_pb2

ACME = Principal(
    tenant_id="acme",
    subject="tenants/acme/apiKeys/k",
    scopes=("chat:write", "router:decide"),
    roles=(),
    key_id="k",
    kind=CredentialKind.API_KEY,
)


def status_of(headers: Mapping[str, str]) -> status_pb2.Status:
    raw = headers["grpc-status-details-bin"]
    return status_pb2.Status.FromString(base64.b64decode(raw + "=" * (-len(raw) % 4)))


def test_denial_carries_grpc_status_headers_and_http_code() -> None:
    error = errors.Unauthenticated(
        "no credential: see docs", reason=errors_pb2.ERROR_REASON_CREDENTIALS_MISSING
    )
    response = denial(error)
    assert response.status == 401
    assert response.body is None
    assert response.headers["grpc-status"] == "16"
    assert response.headers["grpc-message"] == "no credential: see docs"
    info = error_details_pb2.ErrorInfo()
    assert status_of(response.headers).details[0].Unpack(info)
    assert (info.reason, info.domain) == ("CREDENTIALS_MISSING", "supportmesh.io")
    assert "retry-after" not in response.headers
    # Every header a denial sets is one Envoy lets through to the client.
    assert set(response.headers) - {"Content-Type"} <= set(gateway.AUTHZ_CLIENT_HEADERS)


def test_rate_limit_denial_has_retry_after_and_retry_info() -> None:
    error = errors.ResourceExhausted(
        "slow down", reason=errors_pb2.ERROR_REASON_RATE_LIMITED, retry_after_s=3.0
    )
    response = denial(error)
    assert response.status == 429
    assert response.headers["grpc-status"] == "8"
    assert response.headers["retry-after"] == "3"
    retry = error_details_pb2.RetryInfo()
    assert any(detail.Unpack(retry) for detail in status_of(response.headers).details)
    assert retry.retry_delay.seconds == 3


def test_percent_encoding_follows_the_grpc_spec() -> None:
    assert percent_encode("plain text: ok") == "plain text: ok"
    assert percent_encode("100% café\n") == "100%25 caf%C3%A9%0A"


def test_allowance_sets_the_identity_and_nothing_else() -> None:
    assert trusted_headers(ACME) == {
        context.TENANT_KEY: "acme",
        context.SUBJECT_KEY: "tenants/acme/apiKeys/k",
        context.SCOPES_KEY: "chat:write router:decide",
    }


def test_allowance_for_the_operator_sets_no_tenant() -> None:
    operator = Principal(
        tenant_id="",
        subject="platform-admin",
        scopes=("platform:admin",),
        roles=(),
        key_id="0" * 16,
        kind=CredentialKind.API_KEY,
        platform_admin=True,
    )
    headers = trusted_headers(operator)
    assert headers[context.PLATFORM_ADMIN_KEY] == "1"
    assert context.TENANT_KEY not in headers


class FakeGate:
    """Answers with a fixed principal or failure, and records the method it was asked."""

    def __init__(self, outcome: Principal | Exception) -> None:
        self.outcome = outcome
        self.asked: list[tuple[str, str]] = []

    async def check(self, path: str, headers: Mapping[str, str]) -> Principal:
        self.asked.append((path, headers.get("x-api-key", "")))
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


async def ask(gate: FakeGate, path: str) -> web.Response:
    authorizer = Authorizer(gate, CollectorRegistry())  # type: ignore[arg-type]
    request = make_mocked_request("POST", path, headers={"x-api-key": "smk_x"})
    return await authorizer.handle(request)


@pytest.mark.asyncio
async def test_the_gate_is_asked_about_the_method_path_after_the_prefix() -> None:
    gate = FakeGate(ACME)
    method = "/supportmesh.router.v1.RouterService/Decide"
    response = await ask(gate, gateway.AUTHZ_PATH_PREFIX + method)
    assert gate.asked == [(method, "smk_x")]
    assert response.status == 200
    sent = {key: value for key, value in response.headers.items() if key != "Content-Type"}
    assert sent == trusted_headers(ACME)


@pytest.mark.asyncio
async def test_a_refusal_is_answered_with_its_status() -> None:
    refused = errors.PermissionDenied("no", reason=errors_pb2.ERROR_REASON_SCOPE_MISSING)
    response = await ask(FakeGate(refused), gateway.AUTHZ_PATH_PREFIX + "/a.B/C")
    assert response.status == 403
    assert response.headers["grpc-status"] == "7"


@pytest.mark.asyncio
async def test_a_failing_gate_refuses_with_unavailable() -> None:
    failing = FakeGate(ConnectionError("valkey down"))
    response = await ask(failing, gateway.AUTHZ_PATH_PREFIX + "/a.B/C")
    assert response.status == 503
    assert response.headers["grpc-status"] == "14"
    assert response.headers["retry-after"] == "1"
