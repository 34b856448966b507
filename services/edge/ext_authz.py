"""Envoy's external authorization, served over HTTP on the edge's HTTP side.

Envoy's ext_authz filter (``http_service`` mode) asks ``POST /ext_authz/<gRPC method path>``
with the credential headers only (``gateway.AUTHZ_HEADERS``) and an empty body, for every
REST, native gRPC and gRPC-web call after the transcoder. A 200 answer lets the call through
and its ``x-supportmesh-*`` headers become the upstream's trusted metadata
(``allowed_upstream_headers``); anything else is the client's answer.

HTTP rather than the gRPC ``Authorization/Check`` API because this is the one call every
request makes, and it is cheaper in Python over HTTP/1.1: on this platform a grpc.aio unary
call costs about 0.45 ms of server CPU with nothing in its handler, an aiohttp request
about 0.15 ms, and Envoy's CheckRequest carries attributes nobody reads.

How a denial reaches each kind of client (verified with Envoy 1.40, grpc.aio and aiohttp):
Envoy turns a non-200 answer into a local reply with our HTTP code, our (empty) body and
those of our headers that ``allowed_client_headers`` lets through
(``gateway.AUTHZ_CLIENT_HEADERS``), marked as gRPC from the *original* request. So every
denial carries the gRPC status in headers (``grpc-status``, ``grpc-message``,
``grpc-status-details-bin``) with the matching HTTP code:

- native gRPC: Envoy answers trailers-only with our ``grpc-status`` (it only derives one
  from the HTTP code when none is set, and would turn 429 into UNAVAILABLE), so clients get
  UNAUTHENTICATED / PERMISSION_DENIED / RESOURCE_EXHAUSTED with the google.rpc.Status details;
- REST: the transcoder (``convert_grpc_status``) turns those headers into the HTTP code and
  the JSON ``{"code", "message", "details"}`` body, the same shape as every other error;
- gRPC-web: the reply keeps the HTTP code (401/403/429) and the grpc-* headers, which
  gRPC-web clients read as the status.

``Retry-After`` rides along as a plain header for all three. A failure inside the edge
(PostgreSQL or Valkey unreachable) is a 503 UNAVAILABLE denial: fail closed.
"""

from __future__ import annotations

import base64
import logging
import time

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from services.edge.authz import Gate, gate_unavailable, trusted_headers
from services.kit import errors
from services.kit.gateway import AUTHZ_PATH_PREFIX as PATH_PREFIX

_log = logging.getLogger("supportmesh.edge.ext_authz")
_DETAILS_KEY = "grpc-status-details-bin"
# grpc-message is percent-encoded (gRPC over HTTP/2 spec): printable ASCII but '%' as is.
_PLAIN = frozenset(range(0x20, 0x7F)) - {ord("%")}
_MAX_ALLOWANCES = 10_000
_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


def percent_encode(message: str) -> str:
    """A grpc-message header value."""
    return "".join(chr(b) if b in _PLAIN else f"%{b:02X}" for b in message.encode())


def denial_headers(error: errors.DomainError) -> dict[str, str]:
    """The headers refusing a request with ``error``'s status for every client kind."""
    details = dict(error.to_status().trailing_metadata)[_DETAILS_KEY]
    assert isinstance(details, bytes)
    headers = {
        "grpc-status": str(error.code.value[0]),
        "grpc-message": percent_encode(error.message),
        _DETAILS_KEY: base64.b64encode(details).decode().rstrip("="),
    }
    if error.retry_after_s is not None:
        headers["retry-after"] = str(max(1, round(error.retry_after_s)))
    return headers


def denial(error: errors.DomainError) -> web.Response:
    """The answer refusing a request: ``error``'s HTTP code and status headers, no body."""
    return web.Response(status=error.http_status, headers=denial_headers(error))


class Authorizer:
    """Answers Envoy's authorization requests with the :class:`Gate`'s decision."""

    def __init__(self, gate: Gate, registry: CollectorRegistry) -> None:
        """Decide with ``gate``; count decisions in ``registry``."""
        self._gate = gate
        # A caller's OK headers are the same every time; build them once.
        self._allowances: dict[tuple[str, str, tuple[str, ...], bool, int], dict[str, str]] = {}
        self._decisions = Counter(
            "edge_authz_decisions", "ext_authz decisions, by the gRPC status answered.",
            ("code",), registry=registry,
        )  # fmt: skip
        self._seconds = Histogram(
            "edge_authz_seconds", "Time to decide an ext_authz request.",
            buckets=_BUCKETS, registry=registry,
        )  # fmt: skip

    def install(self, app: web.Application) -> None:
        """Route ``PATH_PREFIX/…`` (any method: Envoy keeps the client's) to this authorizer."""
        app.router.add_route("*", PATH_PREFIX + "/{method:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        """Allow with the trusted headers, or deny with the gRPC status in headers."""
        started = time.perf_counter()
        try:
            response = await self._decide(request)
        finally:
            self._seconds.observe(time.perf_counter() - started)
        return response

    async def _decide(self, request: web.Request) -> web.Response:
        method = request.raw_path[len(PATH_PREFIX) :]
        try:
            principal = await self._gate.check(method, request.headers)
        except errors.DomainError as exc:
            self._decisions.labels(exc.code.name).inc()
            return denial(exc)
        except Exception:  # noqa: BLE001 - fail closed: no answer is a refusal
            _log.warning("an authorization request failed", exc_info=True)
            self._decisions.labels("UNAVAILABLE").inc()
            return denial(gate_unavailable())
        self._decisions.labels("OK").inc()
        identity = (
            principal.tenant_id,
            principal.subject,
            principal.scopes,
            principal.platform_admin,
            principal.limits.max_connections,
        )
        headers = self._allowances.get(identity)
        if headers is None:
            if len(self._allowances) >= _MAX_ALLOWANCES:
                self._allowances.clear()
            headers = self._allowances[identity] = trusted_headers(principal)
        return web.Response(status=200, headers=headers)
