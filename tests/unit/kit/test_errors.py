import grpc
from google.rpc import error_details_pb2, status_pb2

from services.kit import errors
from supportmesh.common.v1 import errors_pb2


def test_reason_names_round_trip_without_prefix() -> None:
    name = errors.reason_name(errors_pb2.ERROR_REASON_RATE_LIMITED)
    assert name == "RATE_LIMITED"
    assert errors.reason_value(name) == errors_pb2.ERROR_REASON_RATE_LIMITED
    assert errors.reason_value("NO_SUCH_REASON") == errors_pb2.ERROR_REASON_UNSPECIFIED


def test_every_status_code_has_an_http_status() -> None:
    assert set(errors.HTTP_STATUS) == set(grpc.StatusCode)


def test_domain_error_encodes_error_info_retry_info_and_bad_request() -> None:
    err = errors.ResourceExhausted("slow down", field="query", retry_after_s=1.5)
    status = err.to_status()
    assert status.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    ((key, raw),) = status.trailing_metadata
    assert key == "grpc-status-details-bin"
    decoded = status_pb2.Status.FromString(raw)
    assert decoded.message == "slow down"
    info = error_details_pb2.ErrorInfo()
    retry = error_details_pb2.RetryInfo()
    bad = error_details_pb2.BadRequest()
    assert decoded.details[0].Unpack(info)
    assert decoded.details[1].Unpack(retry)
    assert decoded.details[2].Unpack(bad)
    assert (info.reason, info.domain) == ("RATE_LIMITED", errors.ERROR_DOMAIN)
    assert info.metadata["field"] == "query"
    assert retry.retry_delay.ToNanoseconds() == 1_500_000_000
    assert bad.field_violations[0].field == "query"
    assert err.http_status == 429


def test_to_spec_marks_retryable_codes() -> None:
    assert errors.Unavailable("down").to_spec().retryable
    assert not errors.InvalidArgument("bad").to_spec().retryable
    spec = errors.NotFound("gone").to_spec()
    assert spec.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert spec.reason == errors_pb2.ERROR_REASON_RESOURCE_NOT_FOUND
