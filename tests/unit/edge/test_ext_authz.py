"""Check answers: denials carry the gRPC status for every client kind; OK answers set and
remove exactly the trusted headers."""

from __future__ import annotations

import base64

from google.rpc import error_details_pb2, status_pb2

from services.edge.authn import CredentialKind, Principal
from services.edge.ext_authz import allowance, denial, percent_encode
from services.kit import context, errors
from supportmesh.common.v1 import errors_pb2


def headers_of(options: object) -> dict[str, str]:
    return {option.header.key: option.header.value for option in options}  # type: ignore[attr-defined]


def test_denial_carries_grpc_status_headers_and_http_code() -> None:
    error = errors.Unauthenticated(
        "no credential: see docs", reason=errors_pb2.ERROR_REASON_CREDENTIALS_MISSING
    )
    response = denial(error)
    assert response.status.code == 16
    assert response.denied_response.status.code == 401
    assert response.denied_response.body == ""
    headers = headers_of(response.denied_response.headers)
    assert headers["grpc-status"] == "16"
    assert headers["grpc-message"] == "no credential: see docs"
    raw = headers["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(base64.b64decode(raw + "=" * (-len(raw) % 4)))
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.reason, info.domain) == ("CREDENTIALS_MISSING", "supportmesh.io")
    assert "retry-after" not in headers


def test_rate_limit_denial_has_retry_after_and_retry_info() -> None:
    error = errors.ResourceExhausted(
        "slow down", reason=errors_pb2.ERROR_REASON_RATE_LIMITED, retry_after_s=3.0
    )
    response = denial(error)
    assert response.denied_response.status.code == 429
    headers = headers_of(response.denied_response.headers)
    assert headers["grpc-status"] == "8"
    assert headers["retry-after"] == "3"
    raw = headers["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(base64.b64decode(raw + "=" * (-len(raw) % 4)))
    retry = error_details_pb2.RetryInfo()
    assert any(detail.Unpack(retry) for detail in status.details)
    assert retry.retry_delay.seconds == 3


def test_percent_encoding_follows_the_grpc_spec() -> None:
    assert percent_encode("plain text: ok") == "plain text: ok"
    assert percent_encode("100% café\n") == "100%25 caf%C3%A9%0A"


def test_allowance_sets_identity_and_removes_what_it_does_not_set() -> None:
    principal = Principal(
        tenant_id="acme",
        subject="tenants/acme/apiKeys/k",
        scopes=("chat:write", "router:decide"),
        roles=(),
        key_id="k",
        kind=CredentialKind.API_KEY,
    )
    ok = allowance(principal).ok_response
    assert headers_of(ok.headers) == {
        context.TENANT_KEY: "acme",
        context.SUBJECT_KEY: "tenants/acme/apiKeys/k",
        context.SCOPES_KEY: "chat:write router:decide",
    }
    assert list(ok.headers_to_remove) == [context.PLATFORM_ADMIN_KEY, context.MAX_CONNECTIONS_KEY]


def test_allowance_for_the_operator_removes_the_tenant_header() -> None:
    operator = Principal(
        tenant_id="",
        subject="platform-admin",
        scopes=("platform:admin",),
        roles=(),
        key_id="0" * 16,
        kind=CredentialKind.API_KEY,
        platform_admin=True,
    )
    ok = allowance(operator).ok_response
    assert headers_of(ok.headers)[context.PLATFORM_ADMIN_KEY] == "1"
    assert list(ok.headers_to_remove) == [context.TENANT_KEY, context.MAX_CONNECTIONS_KEY]
