"""Submission validation and content fingerprints."""

from __future__ import annotations

import pytest

from services.kit import errors
from services.knowledge.ingest import Limits, submission
from services.knowledge.tenant_settings import DEFAULT_FAQ_THRESHOLD, resolve
from supportmesh.knowledge.v1 import knowledge_service_pb2 as pb

LIMITS = Limits(max_document_bytes=1000)


def _request(**fields: object) -> pb.IngestDocumentRequest:
    request = pb.IngestDocumentRequest(text="Hello there.", media_type="text/plain", request_id="r")
    for name, value in fields.items():
        setattr(request, name, value)
    return request


def test_a_valid_submission() -> None:
    found = submission(_request(title=" Hi ", external_id="x"), LIMITS)
    assert (found.media_type, found.kind, found.title, found.external_id) == (
        "text/plain", "ARTICLE", "Hi", "x",
    )  # fmt: skip
    assert len(found.content_sha256) == 64


def test_the_fingerprint_follows_content_and_metadata() -> None:
    base = submission(_request(), LIMITS).fingerprint
    assert submission(_request(), LIMITS).fingerprint == base
    assert submission(_request(text="Other."), LIMITS).fingerprint != base
    assert submission(_request(title="T"), LIMITS).fingerprint != base
    assert submission(_request(kind=pb.DOCUMENT_KIND_FAQ), LIMITS).fingerprint != base


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"request_id": ""}, "request_id"),
        ({"media_type": "application/pdf"}, "text"),
        ({"external_id": "x" * 300}, "external_id"),
        ({"kind": 7}, "kind"),
    ],
)
def test_invalid_requests_name_the_field(fields: dict[str, object], field: str) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        submission(_request(**fields), LIMITS, prefix="requests[0].")
    assert caught.value.field == f"requests[0].{field}"


def test_label_keys_must_be_path_safe() -> None:
    request = _request()
    request.labels["product.line"] = "x"
    with pytest.raises(errors.InvalidArgument):
        submission(request, LIMITS)


def test_the_faq_threshold_in_force() -> None:
    assert resolve(0.0, 0.0) == DEFAULT_FAQ_THRESHOLD
    assert resolve(0.0, 0.6) == 0.6
    assert resolve(0.9, 0.6) == 0.9
