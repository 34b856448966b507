"""Envoy's external authorization API (``envoy.service.auth.v3.Authorization/Check``).

A thin adapter over :class:`~services.edge.authz.Gate`: the decision becomes an OK answer
that sets the trusted ``x-supportmesh-*`` headers, or a denial.

How a denial reaches each kind of client (verified with Envoy 1.40, grpc.aio and httpx):
Envoy marks a local reply as gRPC from the *original* request, and the Check request cannot
tell REST from gRPC (after the transcoder both say ``content-type: application/grpc``). So
every denial carries the gRPC status in headers (``grpc-status``, ``grpc-message``,
``grpc-status-details-bin``) with an empty body and the matching HTTP code:

- native gRPC: Envoy answers trailers-only with our ``grpc-status`` (it only derives one
  from the HTTP code when none is set, and would turn 429 into UNAVAILABLE), so clients get
  UNAUTHENTICATED / PERMISSION_DENIED / RESOURCE_EXHAUSTED with the google.rpc.Status details;
- REST: the transcoder (``convert_grpc_status``) turns those headers into the HTTP code and
  the JSON ``{"code", "message", "details"}`` body, the same shape as every other error;
- gRPC-web: the reply keeps the HTTP code (401/403/429) and the grpc-* headers, which
  gRPC-web clients read as the status.

``Retry-After`` rides along as a plain header for all three.
"""

from __future__ import annotations

import base64
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2 as authz_pb
from envoy.service.auth.v3 import external_auth_pb2_grpc as authz_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import status_pb2

from services.edge.authn import Principal
from services.edge.authz import Gate, trusted_headers
from services.kit import errors

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_DETAILS_KEY = "grpc-status-details-bin"
# grpc-message is percent-encoded (gRPC over HTTP/2 spec): printable ASCII but '%' as is.
_PLAIN = frozenset(range(0x20, 0x7F)) - {ord("%")}
_MAX_ALLOWANCES = 10_000


def _header(key: str, value: str) -> Any:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, value=value), append_action=_OVERWRITE
    )


def percent_encode(message: str) -> str:
    """A grpc-message header value."""
    return "".join(chr(b) if b in _PLAIN else f"%{b:02X}" for b in message.encode())


def denial(error: errors.DomainError) -> Any:
    """A CheckResponse refusing the request with ``error``'s status for every client kind."""
    status = error.to_status()
    details = dict(status.trailing_metadata)[_DETAILS_KEY]
    assert isinstance(details, bytes)
    code = error.code.value[0]
    headers = [
        _header("grpc-status", str(code)),
        _header("grpc-message", percent_encode(error.message)),
        _header(_DETAILS_KEY, base64.b64encode(details).decode().rstrip("=")),
    ]
    if error.retry_after_s is not None:
        headers.append(_header("retry-after", str(max(1, round(error.retry_after_s)))))
    return authz_pb.CheckResponse(
        status=status_pb2.Status(code=code, message=error.message),
        denied_response=authz_pb.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=error.http_status), headers=headers
        ),
    )


def allowance(principal: Principal) -> Any:
    """A CheckResponse letting the request through with the principal's trusted headers."""
    to_set, to_remove = trusted_headers(principal)
    return authz_pb.CheckResponse(
        status=status_pb2.Status(code=0),
        ok_response=authz_pb.OkHttpResponse(
            headers=[_header(key, value) for key, value in to_set.items()],
            headers_to_remove=to_remove,
        ),
    )


class AuthorizationServicer(authz_grpc.AuthorizationServicer):  # type: ignore[misc]
    """Answers Envoy's Check calls."""

    def __init__(self, gate: Gate) -> None:
        """Decide with ``gate``."""
        self._gate = gate
        # A caller's OK answer is the same every time; building it is a good part of a Check.
        self._allowances: dict[tuple[str, str, tuple[str, ...], bool, int], Any] = {}

    async def Check(  # noqa: N802 - gRPC method name
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        """Allow the request with trusted headers, or deny it with a google.rpc.Status."""
        http = request.attributes.request.http
        try:
            principal = await self._gate.check(http.path, http.headers)
        except errors.DomainError as exc:
            return denial(exc)
        identity = (
            principal.tenant_id,
            principal.subject,
            principal.scopes,
            principal.platform_admin,
            principal.limits.max_connections,
        )
        response = self._allowances.get(identity)
        if response is None:
            if len(self._allowances) >= _MAX_ALLOWANCES:
                self._allowances.clear()
            response = self._allowances[identity] = allowance(principal)
        return response
