"""knowledge.search's request and response mapping (the knowledge service is tested on its own)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from services.kit import errors
from services.orchestrator.tools import all_specs
from services.orchestrator.tools.knowledge import from_rpc_error, search_output, search_request
from services.orchestrator.tools.schema import problems
from services.orchestrator.tools.spec import schema_of
from supportmesh.common.v1 import errors_pb2
from supportmesh.knowledge.v1 import knowledge_service_pb2 as pb
from supportmesh.spec.v1 import message_pb2


def test_the_request_names_the_tenant_and_carries_the_options() -> None:
    request = search_request(
        "acme",
        {"query": "refund policy", "top_k": 3, "filters": {"locale": "en"}, "min_score": 0.5},
    )
    assert request.parent == "tenants/acme"
    assert (request.query, request.top_k, dict(request.filters)) == (
        "refund policy",
        3,
        {"locale": "en"},
    )
    assert request.min_score == 0.5


def test_the_response_becomes_output_that_fits_the_spec() -> None:
    response = pb.SearchResponse(
        passages=[
            pb.Passage(
                score=0.9, document_id="d1", title="Refunds", chunk_id="c1", text="30 days.",
                citation=message_pb2.Citation(uri="https://help.example.com/refunds"),
            )
        ],
        faq_answers=[
            pb.FaqAnswer(score=0.85, question="Refunds?", answer="30 days.", document_id="d2")
        ],
    )  # fmt: skip
    output = search_output(response)
    assert output["passages"][0]["uri"] == "https://help.example.com/refunds"
    assert output["faq_answers"][0]["answer"] == "30 days."
    spec = next(spec for spec in all_specs() if spec.name == "knowledge.search")
    assert list(problems(output, schema_of(spec.output_schema))) == []


def test_failed_calls_keep_their_code_and_reason() -> None:
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason="TENANT_MISMATCH", domain=errors.ERROR_DOMAIN))
    status = status_pb2.Status(code=7, message="not yours", details=[info])
    trailers = grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString()))
    failure = grpc.aio.AioRpcError(
        grpc.StatusCode.PERMISSION_DENIED, grpc.aio.Metadata(), trailers, details="not yours"
    )
    mapped = from_rpc_error(failure)
    assert isinstance(mapped, errors.PermissionDenied)
    assert mapped.reason == errors_pb2.ERROR_REASON_TENANT_MISMATCH
    down = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), details="down"
    )
    assert isinstance(from_rpc_error(down), errors.Unavailable)
