"""Knowledge at load: ingestion chunks/s, and search p50/p95 at 10,000 chunks × 5 tenants.

Two parts, on the embedded default (qdrant-edge in-process, the packaged MiniLM on CPU):

1. Ingestion: ``--documents`` generated help-centre articles (Markdown, ~10 chunks each) go
   through the real worker path — PostgreSQL row (a PostgreSQL started for the run), parse,
   chunk, embed, upsert, status update — and the wall time gives chunks/s.
2. Search: an index with ``--tenants`` × ``--per-tenant`` chunks (real MiniLM vectors of
   generated support passages; every tenant holds the same passages, as shops with similar
   help centres do, each under its own tenant id) is queried with ``--queries`` questions
   per tenant. Reported side by side: the tenant-filtered qdrant-edge query (plain segments,
   then after ``optimize()`` builds HNSW), a brute-force exact numpy search over the tenant's
   matrix (the baseline, and the ground truth for recall@10), and the whole Search path
   (query embedding, passages and FAQ queries, tenant settings).

Goals: search p95 ≤ 20 ms, ingestion ≥ 50 chunks/s on 2 cores. Figures, not a verdict.
Run it as ``.venv/bin/python bench/knowledge_load.py`` (about 3 minutes with defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._stats import percentile, print_table
from services.dataplane import migrate
from services.kit import db
from services.kit.devstack import APP_ROLE, DATABASE, with_database
from services.kit.stack import PostgresServer, free_port
from services.knowledge.edge_index import EdgeIndex
from services.knowledge.embeddings import LocalEmbedder, QueryCache
from services.knowledge.index import Point, Query
from services.knowledge.ingest import Limits, submission
from services.knowledge.search import Searcher
from services.knowledge.store import Documents
from services.knowledge.tenant_settings import TenantSettings
from services.knowledge.worker import Processor
from supportmesh.events.v1 import events_pb2
from supportmesh.knowledge.v1 import knowledge_service_pb2 as pb

PRODUCTS = ["trail shoes", "rain jacket", "espresso machine", "e-bike", "standing desk",
            "wireless earbuds", "air purifier", "baby stroller", "gaming laptop", "yoga mat",
            "smart thermostat", "camping tent", "electric kettle", "office chair",
            "robot vacuum"]  # fmt: skip
TOPICS = [
    "Returns of the {p} are accepted within {n} days if the item is unused and in its box.",
    "The {p} ships from our {c} warehouse and usually arrives in {n} business days.",
    "Warranty claims for the {p} need the order number and a photo of the fault.",
    "To reset the {p}, hold the power button for {n} seconds until the light blinks.",
    "Spare parts for the {p} can be ordered from the accessories page for {n} euros.",
    "Express delivery of the {p} to {c} costs extra and is not available on holidays.",
    "The {p} can be paid in {n} monthly instalments with no interest.",
    "Customers in {c} can pick up the {p} at a partner store after {n} pm.",
    "Cleaning the {p} once every {n} weeks keeps it working like new.",
    "Gift wrapping for the {p} is free during the {c} holiday season.",
]
CITIES = ["Lisbon", "Berlin", "Oslo", "Madrid", "Vienna", "Dublin", "Prague", "Milan"]
QUESTIONS = [
    "can I send back my {p}", "how long does the {p} take to arrive", "my {p} broke, what now",
    "how do I reset the {p}", "where do I buy spare parts for the {p}",
    "is express shipping possible",
    "can I pay the {p} in instalments", "pick up the {p} in store", "how to clean the {p}",
    "do you gift wrap orders",
]  # fmt: skip


def passage(rng: random.Random) -> str:
    """A generated support passage of three sentences."""
    sentences = [
        rng.choice(TOPICS).format(
            p=rng.choice(PRODUCTS), n=rng.randint(2, 60), c=rng.choice(CITIES)
        )
        for _ in range(3)
    ]  # fmt: skip
    return " ".join(sentences)


def article(rng: random.Random, number: int) -> str:
    """A generated Markdown help article with sections."""
    parts = [f"# Help article {number}"]
    for section in range(5):
        parts.append(f"## Section {section}")
        parts += [passage(rng) + " " + passage(rng) for _ in range(2)]
    return "\n\n".join(parts)


async def _tenant(admin_url: str, tenant: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute(
            "INSERT INTO app.tenants (tenant_id, display_name, plan_id) VALUES ($1, $1, 'pro')",
            tenant,
        )
    finally:
        await connection.close()


async def ingestion(database_url: str, admin_url: str, embedder: LocalEmbedder, docs: int) -> None:
    engine = db.create_engine(database_url, pool_size=2)
    documents = Documents(engine)
    tenant = "bench-ingest"
    await _tenant(admin_url, tenant)
    events: list[events_pb2.DocumentProcessedEvent] = []

    async def publish(event: events_pb2.DocumentProcessedEvent, msg_id: str) -> None:
        events.append(event)

    with tempfile.TemporaryDirectory() as directory:
        index = EdgeIndex(Path(directory))
        processor = Processor(documents, index, embedder, publish)
        processor.meta = await index.open(embedder.model, embedder.dimension)
        rng = random.Random(1)
        tasks = []
        for number in range(docs):
            request = pb.IngestDocumentRequest(
                parent=f"tenants/{tenant}", text=article(rng, number), media_type="text/markdown",
                request_id=uuid.uuid4().hex,
            )  # fmt: skip
            (found,) = await documents.accept(
                tenant, [(submission(request, Limits(1 << 22)), request.request_id)]
            )
            tasks.append(
                pb.IngestTask(tenant_id=tenant, document_id=str(found.row.document_id), revision=1)
            )
        started = time.perf_counter()
        for task in tasks:
            await processor.process(task)
        elapsed = time.perf_counter() - started
        chunks = sum(e.chunk_count for e in events)
        await index.close()
    await engine.dispose()
    print(f"\ningestion (parse, chunk, embed, index, PostgreSQL status; {os.cpu_count()} cores)")
    print_table(
        ["documents", "chunks", "seconds", "chunks/s", "goal"],
        [[docs, chunks, elapsed, chunks / elapsed, ">= 50"]],
        digits=1,
    )


def _timed(samples: list[float], started: float) -> None:
    samples.append((time.perf_counter() - started) * 1000)


async def search(
    database_url: str, admin_url: str, embedder: LocalEmbedder, tenants: int, per_tenant: int,
    queries: int,
) -> None:  # fmt: skip
    rng = random.Random(2)
    texts = [passage(rng) for _ in range(per_tenant)]
    started = time.perf_counter()
    matrix = await embedder.embed(texts)
    print(f"\nembedded {per_tenant} passages in {time.perf_counter() - started:.1f}s "
          f"({per_tenant / (time.perf_counter() - started):.0f}/s)")  # fmt: skip
    names = [f"bench-search-{n}" for n in range(tenants)]
    for name in names:
        await _tenant(admin_url, name)
    questions = [rng.choice(QUESTIONS).format(p=rng.choice(PRODUCTS)) for _ in range(queries)]
    query_vectors = await embedder.embed(questions)
    engine = db.create_engine(database_url, pool_size=2)
    with tempfile.TemporaryDirectory() as directory:
        index = EdgeIndex(Path(directory))
        await index.open(embedder.model, embedder.dimension)
        started = time.perf_counter()
        for tenant in names:
            for start in range(0, per_tenant, 1000):
                await index.upsert([
                    Point(str(uuid.uuid4()), matrix[i].tolist(), {
                        "tenant_id": tenant, "document_id": f"d{i // 10}", "revision": 1,
                        "kind": "chunk", "chunk_id": f"c{i}", "text": texts[i], "labels": {},
                    })
                    for i in range(start, min(start + 1000, per_tenant))
                ])  # fmt: skip
        print(f"indexed {tenants * per_tenant} points in {time.perf_counter() - started:.1f}s")
        truth = np.argsort(-(query_vectors @ matrix.T), axis=1)[:, :10]
        rows = []
        for label in ("qdrant-edge, plain segments", "qdrant-edge, after optimize (HNSW)"):
            if "optimize" in label:
                started = time.perf_counter()
                await asyncio.to_thread(index.shard.optimize)
                print(f"optimize() took {time.perf_counter() - started:.1f}s")
            samples: list[float] = []
            hits = 0
            for q in range(queries):
                for tenant in names:
                    began = time.perf_counter()
                    found = await index.search(
                        Query(tenant, query_vectors[q].tolist(), "chunk", 10)
                    )
                    _timed(samples, began)
                    ids = {int(h.payload["chunk_id"][1:]) for h in found}
                    hits += len(ids & set(truth[q].tolist()))
            rows.append([label, *_figures(samples), hits / (queries * tenants * 10)])
        samples = []
        for q in range(queries):
            for _ in names:
                began = time.perf_counter()
                scores = matrix @ query_vectors[q]
                np.argpartition(-scores, 10)[:10]
                _timed(samples, began)
        rows.append(["numpy brute force (exact)", *_figures(samples), 1.0])
        searcher = Searcher(index, QueryCache(embedder, size=1), TenantSettings(engine))
        samples = []
        for q in range(queries):
            tenant = names[q % tenants]
            began = time.perf_counter()
            await searcher.search(
                tenant, pb.SearchRequest(parent=f"tenants/{tenant}", query=questions[q] + f" #{q}")
            )
            _timed(samples, began)
        rows.append(["Search path (embed query + 2 queries)", *_figures(samples), float("nan")])
        await index.close()
    await engine.dispose()
    print(
        f"\nsearch, {tenants} tenants x {per_tenant} chunks, top-10, tenant filter "
        "(goal p95 <= 20 ms)"
    )
    print_table(["variant", "n", "p50 ms", "p95 ms", "max ms", "recall@10"], rows)


def _figures(samples: list[float]) -> list[float | int]:
    ordered = sorted(samples)
    return [len(ordered), percentile(ordered, 50), percentile(ordered, 95), ordered[-1]]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=100)
    parser.add_argument("--tenants", type=int, default=5)
    parser.add_argument("--per-tenant", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    embedder = LocalEmbedder()
    await embedder.embed(["warm up"])
    with tempfile.TemporaryDirectory() as directory:
        server = PostgresServer(Path(directory) / "pg", free_port(), fast=True)
        server.start()
        try:
            await db.ensure_database(server.url, DATABASE)
            admin = with_database(server.url, DATABASE)
            await asyncio.to_thread(migrate.upgrade, admin)
            app = with_database(server.url, DATABASE, APP_ROLE)
            await ingestion(app, admin, embedder, args.documents)
            await search(app, admin, embedder, args.tenants, args.per_tenant, args.queries)
        finally:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
