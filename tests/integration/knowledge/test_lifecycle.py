"""Dedup, replace, delete, listing, FAQ answers and bad input, through the edge."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import httpx
import pytest

from services.kit.devstack import Platform
from supportmesh.knowledge.v1 import knowledge_service_pb2 as pb
from tests.integration.knowledge.conftest import Client, failure, new_client, pdf_bytes

FAQ = """# Store FAQ

## How long does shipping take?

Standard shipping takes three to five business days.

## Can I pay with PayPal?

Yes, PayPal is accepted at checkout.
"""


async def test_same_content_again_is_the_same_document_and_no_new_work(client: Client) -> None:
    text = f"Our support line is open on weekdays. Ref {uuid.uuid4()}."
    first = await client.wait((await client.ingest("text/plain", text)).name)
    again = await client.ingest("text/plain", text)
    assert again.name == first.name
    assert again.status == pb.DOCUMENT_STATUS_INDEXED
    assert again.update_time == first.update_time
    assert again.content_sha256 == first.content_sha256


async def test_a_retried_request_id_ingests_once(client: Client) -> None:
    request = pb.IngestDocumentRequest(
        parent=client.parent, text="Retry me once.", media_type="text/plain", request_id="r-1"
    )
    first = await client.stub.IngestDocument(request, metadata=client.metadata, timeout=10)
    request.text = "A different body under the same request id."
    second = await client.stub.IngestDocument(request, metadata=client.metadata, timeout=10)
    assert second.document.name == first.document.name
    assert second.document.content_sha256 == first.document.content_sha256


async def test_reingesting_an_external_id_replaces_its_chunks(client: Client) -> None:
    old = "The loyalty programme gives one point per euro spent on shoes."
    new = "Warehouse tours run every Friday afternoon for registered visitors."
    first = await client.wait((await client.ingest("text/plain", old, external_id="loyalty")).name)
    second = await client.ingest("text/plain", new, external_id="loyalty")
    assert second.name == first.name
    assert second.status == pb.DOCUMENT_STATUS_QUEUED
    done = await client.wait(second.name)
    assert done.status == pb.DOCUMENT_STATUS_INDEXED
    assert done.content_sha256 != first.content_sha256
    document_id = done.name.rsplit("/", 1)[1]
    texts = [p.text for p in (await client.search("loyalty points", top_k=50)).passages]
    mine = list((await client.search("warehouse tours", top_k=50)).passages)
    assert old not in texts
    assert [p.text for p in mine if p.document_id == document_id] == [new]


async def test_delete_removes_the_document_and_its_passages(client: Client) -> None:
    text = "Umbrellas can be borrowed at the front desk on rainy days."
    document = await client.wait((await client.ingest("text/plain", text)).name)
    document_id = document.name.rsplit("/", 1)[1]
    request = pb.DeleteDocumentRequest(name=document.name, request_id=uuid.uuid4().hex)
    await client.stub.DeleteDocument(request, metadata=client.metadata, timeout=10)
    # A retry with the same request id succeeds; a fresh delete finds nothing.
    await client.stub.DeleteDocument(request, metadata=client.metadata, timeout=10)
    gone = await failure(client.get(document.name))
    assert gone.code == grpc.StatusCode.NOT_FOUND
    found = await client.search("borrow an umbrella", top_k=50)
    assert document_id not in {p.document_id for p in found.passages}
    again = pb.DeleteDocumentRequest(name=document.name)
    missing = await failure(client.stub.DeleteDocument(again, metadata=client.metadata, timeout=5))
    assert missing.code == grpc.StatusCode.NOT_FOUND


async def test_list_pages_newest_first_and_filters_by_status(
    platform: Platform, channel: grpc.aio.Channel, http: httpx.AsyncClient
) -> None:
    own = await new_client(platform, channel, http)
    names = [(await own.ingest("text/plain", f"Note number {i}.")).name for i in range(5)]
    for name in names:
        await own.wait(name)
    seen: list[str] = []
    token = ""
    while True:
        request = pb.ListDocumentsRequest(parent=own.parent, page_size=2, page_token=token)
        reply = await own.stub.ListDocuments(request, metadata=own.metadata, timeout=10)
        seen += [d.name for d in reply.documents]
        token = reply.next_page_token
        if not token:
            break
    assert seen == list(reversed(names))
    failed = pb.ListDocumentsRequest(parent=own.parent, status=pb.DOCUMENT_STATUS_FAILED)
    reply = await own.stub.ListDocuments(failed, metadata=own.metadata, timeout=10)
    assert list(reply.documents) == []


async def test_faq_answers_directly_above_the_tenant_threshold(
    platform: Platform, channel: grpc.aio.Channel, http: httpx.AsyncClient
) -> None:
    own = await new_client(platform, channel, http)
    document = await own.wait(
        (await own.ingest("text/markdown", FAQ, kind=pb.DOCUMENT_KIND_FAQ)).name
    )
    assert document.status == pb.DOCUMENT_STATUS_INDEXED
    assert document.chunk_count == 2
    found = await own.search("How long does shipping take?")
    (answer,) = found.faq_answers
    assert answer.question == "How long does shipping take?"
    assert "three to five business days" in answer.answer
    assert answer.score >= 0.8
    assert answer.citation.document_id == document.name.rsplit("/", 1)[1]
    paraphrase = "when will my parcel arrive"
    assert list((await own.search(paraphrase)).faq_answers) == []
    settings = pb.KnowledgeSettings(name=f"{own.parent}/knowledgeSettings", faq_threshold=0.3)
    update = pb.UpdateKnowledgeSettingsRequest(knowledge_settings=settings)
    stored = await own.stub.UpdateKnowledgeSettings(update, metadata=own.metadata, timeout=10)
    assert stored.knowledge_settings.faq_threshold == pytest.approx(0.3)
    answers: list[pb.FaqAnswer] = []
    for _ in range(50):  # the setting is cached for a few seconds
        answers = list((await own.search(paraphrase)).faq_answers)
        if answers:
            break
        await asyncio.sleep(0.2)
    assert answers
    assert answers[0].question == "How long does shipping take?"
    # The request's own threshold wins over the tenant's.
    assert list((await own.search(paraphrase, faq_threshold=0.99)).faq_answers) == []


@pytest.mark.parametrize(
    ("media_type", "body", "reason"),
    [
        ("text/plain", "   \n ", "VALIDATION_FAILED"),
        ("application/msword", b"\xd0\xcf\x11\xe0", "UNSUPPORTED_MEDIA"),
        ("application/pdf", b"%PDF-1.7\n this is not really a pdf", "VALIDATION_FAILED"),
        ("application/pdf", pdf_bytes(["x"])[:200], "VALIDATION_FAILED"),
        ("text/plain", "x" * (3 * 1024 * 1024 + 1), "PAYLOAD_TOO_LARGE"),
    ],
    ids=["empty", "unsupported", "corrupt-pdf", "truncated-pdf", "oversized"],
)
async def test_bad_input_is_refused_with_its_reason(
    client: Client, media_type: str, body: str | bytes, reason: str
) -> None:
    refused = await failure(client.ingest(media_type, body))
    assert refused.code == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.reason == reason


async def test_bad_input_over_rest_answers_400_with_the_reason(client: Client) -> None:
    reply = await client.http.post(
        f"/v1/{client.parent}/documents:ingest",
        json={"text": "hello", "mediaType": "image/png", "requestId": "x"},
        headers={"x-api-key": client.key.secret},
    )
    assert reply.status_code == 400
    (info,) = [d for d in reply.json()["details"] if d["@type"].endswith("ErrorInfo")]
    assert info["reason"] == "UNSUPPORTED_MEDIA"


async def test_another_tenants_documents_are_not_found(
    platform: Platform, channel: grpc.aio.Channel, http: httpx.AsyncClient, client: Client
) -> None:
    other = await new_client(platform, channel, http)
    theirs = await other.ingest("text/plain", "Secret supplier discount codes.")
    hidden = await failure(client.get(theirs.name))
    assert hidden.code == grpc.StatusCode.NOT_FOUND
    wrong = await failure(client.stub.Search(
        pb.SearchRequest(parent=other.parent, query="discount"), metadata=client.metadata, timeout=5
    ))  # fmt: skip
    assert wrong.code == grpc.StatusCode.NOT_FOUND


async def _count(client: Client) -> int:
    request = pb.ListDocumentsRequest(parent=client.parent, page_size=1000)
    reply = await client.stub.ListDocuments(request, metadata=client.metadata, timeout=10)
    return len(reply.documents)


async def test_batch_is_all_or_nothing(
    platform: Platform, channel: grpc.aio.Channel, http: httpx.AsyncClient
) -> None:
    own = await new_client(platform, channel, http)
    good = pb.IngestDocumentRequest(text="Batch one.", media_type="text/plain", request_id="b1")
    bad = pb.IngestDocumentRequest(text="", media_type="text/plain", request_id="b2")
    batch = pb.BatchIngestDocumentsRequest(parent=own.parent, requests=[good, bad])
    refused = await failure(own.stub.BatchIngestDocuments(batch, metadata=own.metadata, timeout=10))
    assert refused.code == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.metadata.get("field") == "requests[1].text"
    assert await _count(own) == 0
    other = pb.IngestDocumentRequest(text="Batch two.", media_type="text/plain", request_id="b3")
    ok = pb.BatchIngestDocumentsRequest(parent=own.parent, requests=[good, other])
    reply = await own.stub.BatchIngestDocuments(ok, metadata=own.metadata, timeout=10)
    assert [d.status for d in reply.documents] == [pb.DOCUMENT_STATUS_QUEUED] * 2
    assert await _count(own) == 2
