"""Thousands of searches across tenants with overlapping content: zero passages of another.

In-process against the service layer (real PostgreSQL under RLS, real NATS, the real model,
its own qdrant-edge index): every tenant holds the same shared articles plus one of its own,
and each search runs as a verified caller through the servicer, and again on the raw index
(where the servicer's last-line check could not hide a leaking filter).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from services.kit import context, errors
from services.kit.devstack import Platform
from services.kit.settings import InfraSettings
from services.knowledge.app import KnowledgeApp, KnowledgeSettings, build
from services.knowledge.index import Query
from services.knowledge.ingest import Limits, submission
from services.knowledge.lexical import Lexical
from supportmesh.knowledge.v1 import knowledge_service_pb2 as pb

TENANTS = 4
SHARED = [
    "Refunds are paid to the original card within five business days.",
    "Standard shipping takes three to five days; express ships next day.",
    "Shoes can be exchanged for another size free of charge.",
    "Gift cards never expire and work on every order.",
    "Our support team answers chats from 8am to 8pm on weekdays.",
    "Passwords can be reset from the sign-in page with the forgot password link.",
]
QUERIES = [
    "how do refunds work",
    "when will my order ship",
    "exchange shoes for a bigger size",
    "do gift cards expire",
    "support opening hours",
    "reset my password",
    "secret supplier code",
    "private pricing agreement",
    "internal warehouse address",
    "what is the discount for employees",
]


def as_caller(tenant: str) -> context.CallContext:
    return context.CallContext(request_id=uuid.uuid4().hex, method="test", tenant_id=tenant)


@pytest.fixture(scope="module")
async def app(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    settings = KnowledgeSettings(
        index_path=Path(tmp_path_factory.mktemp("isolation-index")),
        infra=InfraSettings(database_url=platform.database_url, nats_url=platform.nats_url),
        inline_worker=False,
    )
    knowledge = build(settings)
    await knowledge.start(work=False)
    try:
        yield knowledge
    finally:
        await knowledge.stop()


@pytest.fixture(scope="module")
async def tenants(platform: Platform, app: KnowledgeApp) -> dict[str, set[str]]:
    """Tenant id → ids of its documents, all indexed."""
    connection = await asyncpg.connect(platform.admin_database_url)
    found: dict[str, set[str]] = {}
    try:
        for number in range(TENANTS):
            tenant = f"iso-{number}-{uuid.uuid4().hex[:8]}"
            await connection.execute(
                "INSERT INTO app.tenants (tenant_id, display_name, plan_id) VALUES ($1, $1, 'pro')",
                tenant,
            )
            found[tenant] = set()
    finally:
        await connection.close()
    for _ in range(100):  # events go out on the platform's NATS
        if app.bus.js is not None:
            break
        await asyncio.sleep(0.1)
    limits = Limits(app.settings.max_document_bytes)
    for number, tenant in enumerate(found):
        own = f"Tenant {number} secret supplier code is ZX-{number}-{uuid.uuid4().hex[:6]}."
        for text in [*SHARED, own]:
            request = pb.IngestDocumentRequest(
                parent=f"tenants/{tenant}", text=text, media_type="text/plain",
                request_id=uuid.uuid4().hex,
            )  # fmt: skip
            # Stored directly (not queued: the platform's own worker would take the item).
            (accepted,) = await app.documents.accept(
                tenant, [(submission(request, limits), request.request_id)]
            )
            document_id = str(accepted.row.document_id)
            task = pb.IngestTask(tenant_id=tenant, document_id=document_id, revision=1)
            await app.processor.process(task)
            found[tenant].add(document_id)
    return found


async def test_thousands_of_searches_return_no_other_tenants_passage(
    app: KnowledgeApp, tenants: dict[str, set[str]]
) -> None:
    searches = leaks = passages = 0
    lexical = Lexical()
    for tenant, query, top_k in itertools.product(tenants, QUERIES, (1, 5, 20, 50)):
        for repeat in range(8):
            request = pb.SearchRequest(
                parent=f"tenants/{tenant}", query=query, top_k=top_k, min_score=-1 + repeat * 0.1
            )
            token = context.bind(as_caller(tenant))
            try:
                reply = await app.servicer.Search(request, None)  # type: ignore[arg-type]
            finally:
                context.reset(token)
            vector = await app.servicer._searcher._queries.vector(query)
            # Both rankings of the hybrid query (dense and BM25) run under the tenant filter.
            values, terms = [float(x) for x in vector], lexical.query(query)
            raw = await app.index.search(Query(tenant, values, "chunk", top_k, terms=terms))
            searches += 2
            passages += len(reply.passages) + len(raw)
            leaks += sum(p.document_id not in tenants[tenant] for p in reply.passages)
            leaks += sum(
                h.payload["tenant_id"] != tenant or h.payload["document_id"] not in tenants[tenant]
                for h in raw
            )
    assert searches >= 2000
    assert passages > searches  # the searches found plenty; none of it was another tenant's
    assert leaks == 0


async def test_a_caller_cannot_search_another_tenant_by_naming_it(
    app: KnowledgeApp, tenants: dict[str, set[str]]
) -> None:
    mine, theirs = list(tenants)[:2]
    token = context.bind(as_caller(mine))
    try:
        with pytest.raises(errors.NotFound):
            await app.servicer.Search(
                pb.SearchRequest(parent=f"tenants/{theirs}", query="secret supplier code"),
                None,  # type: ignore[arg-type]
            )
    finally:
        context.reset(token)
    assert errors.NotFound.code == grpc.StatusCode.NOT_FOUND
