"""Each media type end to end through the edge with an API key: ingest, index, search, cite."""

from __future__ import annotations

import base64
import uuid

import pytest
from nats.js import api as js_api

from services.kit import events
from services.kit.devstack import Platform
from supportmesh.events.v1 import events_pb2
from supportmesh.knowledge.v1 import knowledge_service_pb2 as pb
from tests.integration.knowledge.conftest import Client, pdf_bytes

PLAIN = (
    "Gift cards\n\nGift cards never expire and can be used on any order in the online store.\n\n"
    "Lost gift cards cannot be replaced, so keep the code somewhere safe."
)
MARKDOWN = """# Returns policy

Our customers love a simple returns process.

## Return window

Unworn shoes can be returned within 30 days of delivery for a full refund.

## Exchanges

- Exchanges for another size are free.
- The replacement ships once we receive the original pair.
"""
HTML = """<html><head><title>Shipping help</title><style>p{}</style></head><body>
<nav>Home | Help</nav><h1>Shipping</h1><p>Standard shipping takes three to five business
days within the country.</p><h2>International</h2><p>International parcels arrive within two
weeks and may incur customs duties.</p><script>track()</script></body></html>"""
PDF_PAGES = [
    "Warranty. Every kettle comes with a two year warranty covering heating element faults.",
    "Descaling. Descale the kettle monthly with citric acid to keep it working quietly.",
]

CASES = [
    ("text/plain", PLAIN, "Do gift cards expire?", "Gift cards never expire"),
    ("text/markdown", MARKDOWN, "How many days do I have to send shoes back?", "within 30 days"),
    ("text/html", HTML, "how long does delivery abroad take", "International parcels"),
    ("application/pdf", pdf_bytes(PDF_PAGES, "Kettle"), "how often should I descale", "monthly"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("media_type", "body", "query", "expected"), CASES, ids=[c[0] for c in CASES]
)
async def test_each_format_is_indexed_and_found_with_a_citation(
    client: Client, media_type: str, body: str | bytes, query: str, expected: str
) -> None:
    source = f"https://help.example.com/{uuid.uuid4().hex[:6]}"
    accepted = await client.ingest(media_type, body, source_uri=source)
    assert accepted.status == pb.DOCUMENT_STATUS_QUEUED
    assert accepted.name.startswith(f"{client.parent}/documents/")
    document = await client.wait(accepted.name)
    assert document.status == pb.DOCUMENT_STATUS_INDEXED, document.failure_reason
    assert document.chunk_count >= 1
    assert document.title
    assert document.HasField("index_time")
    found = await client.search(query, top_k=3)
    document_id = accepted.name.rsplit("/", 1)[1]
    best = next(p for p in found.passages if p.document_id == document_id)
    assert expected in best.text
    assert best.citation.document_id == document_id
    assert best.citation.uri == source
    assert best.citation.title == document.title
    assert best.citation.chunk_id == best.chunk_id
    assert 0 < best.score <= 1


async def test_pdf_pages_become_separate_passages(client: Client) -> None:
    document = await client.wait(
        (await client.ingest("application/pdf", pdf_bytes(PDF_PAGES))).name
    )
    assert document.chunk_count == 2


async def test_rest_ingest_and_search_with_base64_pdf(client: Client) -> None:
    headers = {"x-api-key": client.key.secret}
    body = {
        "content": base64.b64encode(pdf_bytes(["Loyalty points expire after one year."])).decode(),
        "mediaType": "application/pdf",
        "title": "Loyalty",
        "requestId": uuid.uuid4().hex,
    }
    reply = await client.http.post(
        f"/v1/{client.parent}/documents:ingest", json=body, headers=headers
    )
    assert reply.status_code == 200, reply.text
    name = reply.json()["document"]["name"]
    assert (await client.wait(name)).status == pb.DOCUMENT_STATUS_INDEXED
    found = await client.http.post(
        f"/v1/{client.parent}/documents:search",
        json={"query": "when do my points expire", "topK": 1},
        headers=headers,
    )
    assert found.status_code == 200, found.text
    (passage,) = found.json()["passages"]
    assert passage["title"] == "Loyalty"
    assert "one year" in passage["text"]


async def test_indexing_publishes_a_processed_event(platform: Platform, client: Client) -> None:
    nats, js = await events.connect(platform.nats_url)
    try:
        start = (await js.stream_info("INGEST")).state.last_seq + 1
        accepted = await client.ingest("text/plain", f"Store hours {uuid.uuid4()}: 9 to 5.")
        await client.wait(accepted.name)
        document_id = accepted.name.rsplit("/", 1)[1]
        config = js_api.ConsumerConfig(
            deliver_policy=js_api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start
        )
        sub = await js.pull_subscribe(events.INGEST_DOC_PROCESSED, stream="INGEST", config=config)
        mine: list[events_pb2.DocumentProcessedEvent] = []
        for _ in range(20):
            try:
                batch = await sub.fetch(100, timeout=0.5)
            except TimeoutError:
                break
            decoded = [events_pb2.DocumentProcessedEvent.FromString(m.data) for m in batch]
            mine += [e for e in decoded if e.document_id == document_id]
        await sub.unsubscribe()
    finally:
        await nats.close()
    (event,) = mine
    assert event.tenant_id == client.tenant
    assert event.status == pb.DOCUMENT_STATUS_INDEXED
    assert event.chunk_count == 1
    assert event.HasField("occur_time")
