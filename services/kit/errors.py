"""Domain errors and their one mapping to gRPC status, ErrorInfo and HTTP codes.

Every service raises a :class:`DomainError` subclass; the error interceptor turns it into a
``google.rpc.Status`` whose details carry ``ErrorInfo{reason, domain}`` (plus ``RetryInfo`` or
``BadRequest`` where they apply). Clients switch on the reason, never on the message text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from supportmesh.common.v1 import errors_pb2

ERROR_DOMAIN = "supportmesh.io"
_REASON_PREFIX = "ERROR_REASON_"

# The one table from gRPC status to HTTP status, as Envoy's transcoder and google.rpc define it.
HTTP_STATUS: Mapping[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def reason_name(reason: errors_pb2.ErrorReason.ValueType) -> str:
    """Return the wire form of a reason: its enum name without the ``ERROR_REASON_`` prefix."""
    return errors_pb2.ErrorReason.Name(reason).removeprefix(_REASON_PREFIX)


def reason_value(name: str) -> errors_pb2.ErrorReason.ValueType:
    """Return the enum value for a wire reason; unknown names map to UNSPECIFIED."""
    try:
        return errors_pb2.ErrorReason.Value(_REASON_PREFIX + name)
    except ValueError:
        return errors_pb2.ERROR_REASON_UNSPECIFIED


class DomainError(Exception):
    """Root of every error a service raises on purpose; carries its status and reason."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    default_reason: errors_pb2.ErrorReason.ValueType = errors_pb2.ERROR_REASON_INTERNAL

    def __init__(
        self,
        message: str,
        *,
        reason: errors_pb2.ErrorReason.ValueType | None = None,
        metadata: Mapping[str, str] | None = None,
        field: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        """Build the error; ``field`` names the offending request field for BadRequest."""
        super().__init__(message)
        self.message = message
        self.reason = self.default_reason if reason is None else reason
        self.metadata = dict(metadata or {})
        self.field = field
        self.retry_after_s = retry_after_s
        if field is not None:
            self.metadata.setdefault("field", field)

    @property
    def http_status(self) -> int:
        """The HTTP status the edge answers with for this error."""
        return HTTP_STATUS[self.code]

    def to_status(self) -> grpc.Status:
        """Encode as a ``grpc.Status`` with ``google.rpc.Status`` details in the trailers."""
        details = [
            error_details_pb2.ErrorInfo(
                reason=reason_name(self.reason), domain=ERROR_DOMAIN, metadata=self.metadata
            )
        ]
        extra: list[error_details_pb2.RetryInfo | error_details_pb2.BadRequest] = []
        if self.retry_after_s is not None:
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(int(self.retry_after_s * 1e9))
            extra.append(error_details_pb2.RetryInfo(retry_delay=delay))
        if self.field is not None:
            violation = error_details_pb2.BadRequest.FieldViolation(
                field=self.field, description=self.message
            )
            extra.append(error_details_pb2.BadRequest(field_violations=[violation]))
        packed = []
        for detail in [*details, *extra]:
            holder = any_pb2.Any()
            holder.Pack(detail)
            packed.append(holder)
        status = status_pb2.Status(code=self.code.value[0], message=self.message, details=packed)
        encoded: grpc.Status = rpc_status.to_status(status)
        return encoded

    def to_spec(self) -> errors_pb2.ErrorSpec:
        """Encode as an ErrorSpec for payloads and stream events."""
        return errors_pb2.ErrorSpec(
            code=self.code.value[0],
            reason=self.reason,
            message=self.message,
            metadata=self.metadata,
            retryable=self.code in _RETRYABLE,
        )


class InvalidArgument(DomainError):
    """A request field is missing or malformed."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = errors_pb2.ERROR_REASON_VALIDATION_FAILED


class NotFound(DomainError):
    """The resource does not exist for the caller's tenant."""

    code = grpc.StatusCode.NOT_FOUND
    default_reason = errors_pb2.ERROR_REASON_RESOURCE_NOT_FOUND


class AlreadyExists(DomainError):
    """The resource already exists."""

    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = errors_pb2.ERROR_REASON_RESOURCE_EXISTS


class Unauthenticated(DomainError):
    """The caller did not prove who it is."""

    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = errors_pb2.ERROR_REASON_CREDENTIALS_INVALID


class PermissionDenied(DomainError):
    """The caller is known but may not do this."""

    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = errors_pb2.ERROR_REASON_SCOPE_MISSING


class ResourceExhausted(DomainError):
    """A rate limit, quota, budget or size limit was hit."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = errors_pb2.ERROR_REASON_RATE_LIMITED


class FailedPrecondition(DomainError):
    """The system is not in a state that allows the operation."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = errors_pb2.ERROR_REASON_INVALID_STATE


class Aborted(DomainError):
    """A concurrent change won; the caller may retry."""

    code = grpc.StatusCode.ABORTED
    default_reason = errors_pb2.ERROR_REASON_CONFLICT


class Unavailable(DomainError):
    """A dependency is unreachable; the caller may retry later."""

    code = grpc.StatusCode.UNAVAILABLE
    default_reason = errors_pb2.ERROR_REASON_DEPENDENCY_UNAVAILABLE


class DeadlineExceeded(DomainError):
    """The work ran past its time budget."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = errors_pb2.ERROR_REASON_TIMEOUT


class Unimplemented(DomainError):
    """The method is in the contract but not served by this deployment."""

    code = grpc.StatusCode.UNIMPLEMENTED
    default_reason = errors_pb2.ERROR_REASON_NOT_IMPLEMENTED


class Internal(DomainError):
    """An unexpected failure, reported without internals."""


_RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)


@dataclass(frozen=True)
class RemoteError:
    """What a client learns from a failed call: code, reason, message and details."""

    code: grpc.StatusCode
    reason: str
    message: str
    metadata: Mapping[str, str]
    retry_after_s: float | None


def parse_rpc_error(error: grpc.RpcError) -> RemoteError:
    """Decode the ``google.rpc.Status`` details of a failed call (sync or aio)."""
    call: Any = error  # both grpc.Call and grpc.aio.AioRpcError carry these accessors
    code: grpc.StatusCode = call.code()
    message: str = call.details() or ""
    reason, metadata, retry = "", {}, None
    trailers: Iterable[tuple[str, str | bytes]] = call.trailing_metadata() or ()
    for key, value in trailers:
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, metadata = info.reason, dict(info.metadata)
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry_info = error_details_pb2.RetryInfo()
                detail.Unpack(retry_info)
                retry = retry_info.retry_delay.ToNanoseconds() / 1e9
    return RemoteError(code, reason, message, metadata, retry)
