"""Knowledge at load: ingestion chunks/s, and search p50/p95 at 10,000 chunks × 5 tenants.

Two parts, on the embedded default (qdrant-edge in-process, the packaged MiniLM on CPU):

1. Ingestion: ``--documents`` generated help-centre articles (Markdown, ~10 chunks each) go
   through the real worker path — PostgreSQL row (a PostgreSQL started for the run), parse,
   chunk, embed, BM25 terms, upsert, status update — and the wall time gives chunks/s, one
   document at a time and ``--concurrency`` at a time (as the service's pullers do).
2. Search: an index with ``--tenants`` × ``--per-tenant`` chunks (real MiniLM vectors and BM25
   terms of generated support passages; every tenant holds the same passages, as shops with
   similar help centres do, each under its own tenant id) is queried with ``--queries``
   questions per tenant. Reported side by side: the tenant-filtered qdrant-edge dense query
   (plain segments, then after ``optimize()`` builds HNSW), the hybrid query (dense, BM25
   and lead rankings) the service runs for passages, a brute-force exact numpy search over
   the tenant's matrix (the baseline, and the ground truth for recall@10), the query
   embedding alone, and the whole
   Search path (query embedding, passages and FAQ queries, tenant settings): new queries one
   at a time, new queries from ``--clients`` concurrent callers (they share encoding passes),
   and repeated queries (served from the query-vector cache).

``--precision float32`` runs the local model in float32 (the baseline of ``auto``, which
picks bfloat16 where the CPU computes it natively: see services.knowledge.minilm).

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
from collections.abc import Callable
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
from services.knowledge.embeddings import LocalEmbedder
from services.knowledge.index import Point, Query
from services.knowledge.ingest import Limits, submission
from services.knowledge.lexical import Lexical
from services.knowledge.query_vectors import QueryVectors
from services.knowledge.search import Searcher
from services.knowledge.store import Documents
from services.knowledge.tenant_settings import TenantSettings
from services.knowledge.worker import ChunkingConfig, Processor
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


async def _ingest_once(
    documents: Documents, embedder: LocalEmbedder, tenant: str, docs: int, concurrency: int
) -> list[float | int | str]:
    events: list[events_pb2.DocumentProcessedEvent] = []

    async def publish(event: events_pb2.DocumentProcessedEvent, msg_id: str) -> None:
        events.append(event)

    with tempfile.TemporaryDirectory() as directory:
        index = EdgeIndex(Path(directory))
        processor = Processor(documents, index, embedder, publish)
        processor.meta = await index.open(embedder.model, embedder.dimension)
        rng = random.Random(1)
        tasks: asyncio.Queue[pb.IngestTask] = asyncio.Queue()
        for number in range(docs):
            request = pb.IngestDocumentRequest(
                parent=f"tenants/{tenant}", text=article(rng, number) + f"\n\n{tenant}",
                media_type="text/markdown", request_id=uuid.uuid4().hex,
            )  # fmt: skip
            (found,) = await documents.accept(
                tenant, [(submission(request, Limits(1 << 22)), request.request_id)]
            )
            tasks.put_nowait(
                pb.IngestTask(tenant_id=tenant, document_id=str(found.row.document_id), revision=1)
            )

        async def work() -> None:
            while not tasks.empty():
                await processor.process(tasks.get_nowait())

        started = time.perf_counter()
        await asyncio.gather(*(work() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        await index.close()
    chunks = sum(e.chunk_count for e in events)
    label = "one document at a time" if concurrency == 1 else f"{concurrency} documents at once"
    return [label, docs, chunks, elapsed, chunks / elapsed, ">= 50"]


async def ingestion(
    database_url: str, admin_url: str, embedder: LocalEmbedder, docs: int, concurrency: int
) -> None:
    engine = db.create_engine(database_url, pool_size=4)
    documents = Documents(engine)
    rows = []
    for workers in sorted({1, concurrency}):
        tenant = f"bench-ingest-{workers}"
        await _tenant(admin_url, tenant)
        rows.append(await _ingest_once(documents, embedder, tenant, docs, workers))
    await engine.dispose()
    config = ChunkingConfig()
    print(f"\ningestion (parse, chunk, embed, BM25 terms, index, PostgreSQL status; "
          f"{os.cpu_count()} cores; chunks ≤{config.max_tokens} tokens, "
          f"overlap {config.overlap})")  # fmt: skip
    print_table(["mode", "documents", "chunks", "seconds", "chunks/s", "goal"], rows, digits=1)


def _timed(samples: list[float], started: float) -> None:
    samples.append((time.perf_counter() - started) * 1000)


async def _index(
    embedder: LocalEmbedder, directory: str, names: list[str], texts: list[str]
) -> tuple[EdgeIndex, np.ndarray]:
    lexical = Lexical()
    started = time.perf_counter()
    matrix = await embedder.embed(texts)
    terms = [lexical.passage(text) for text in texts]
    elapsed = time.perf_counter() - started
    print(f"\nembedded {len(texts)} passages in {elapsed:.1f}s ({len(texts) / elapsed:.0f}/s)")
    index = EdgeIndex(Path(directory))
    await index.open(embedder.model, embedder.dimension)
    started = time.perf_counter()
    for tenant in names:
        for start in range(0, len(texts), 1000):
            await index.upsert([
                Point(str(uuid.uuid4()), matrix[i].tolist(), {
                    "tenant_id": tenant, "document_id": f"d{i // 10}", "revision": 1,
                    "kind": "chunk", "chunk_id": f"c{i}", "text": texts[i], "labels": {},
                    "position": i % 10,
                }, terms[i])
                for i in range(start, min(start + 1000, len(texts)))
            ])  # fmt: skip
    print(f"indexed {len(names) * len(texts)} points in {time.perf_counter() - started:.1f}s")
    return index, matrix


async def _index_rows(
    index: EdgeIndex, names: list[str], questions: list[str], vectors: np.ndarray,
    truth: np.ndarray,
) -> list[list[float | int | str]]:  # fmt: skip
    rows: list[list[float | int | str]] = []
    lexical = Lexical()
    variants = (
        "dense, plain segments", "dense, after optimize (HNSW)", "hybrid: dense + BM25 + leads"
    )  # fmt: skip
    for label in variants:
        if "optimize" in label:
            started = time.perf_counter()
            await asyncio.to_thread(index.shard.optimize)
            print(f"optimize() took {time.perf_counter() - started:.1f}s")
        samples: list[float] = []
        hits = 0
        for q, question in enumerate(questions):
            terms = lexical.query(question) if "hybrid" in label else None
            for tenant in names:
                began = time.perf_counter()
                found = await index.search(
                    Query(tenant, vectors[q].tolist(), "chunk", 10, terms=terms)
                )
                _timed(samples, began)
                ids = {int(h.payload["chunk_id"][1:]) for h in found}
                hits += len(ids & set(truth[q].tolist()))
        recall = hits / (len(questions) * len(names) * 10) if "hybrid" not in label else "n/a"
        rows.append([f"qdrant-edge {label}", *_figures(samples), recall])
    return rows


async def _path_rows(
    searcher_for: Callable[[], Searcher], embedder: LocalEmbedder, names: list[str],
    questions: list[str], clients: int,
) -> list[list[float | int | str]]:  # fmt: skip
    rows: list[list[float | int | str]] = []
    samples: list[float] = []
    for q, question in enumerate(questions):
        began = time.perf_counter()
        await embedder.embed_queries([f"{question} #{q}"])
        _timed(samples, began)
    rows.append(["query embedding alone (query lane)", *_figures(samples), "n/a"])

    async def ask(searcher: Searcher, tenant: str, query: str, samples: list[float]) -> None:
        began = time.perf_counter()
        request = pb.SearchRequest(parent=f"tenants/{tenant}", query=query)
        await searcher.search(tenant, request)
        _timed(samples, began)

    searcher = searcher_for()
    samples = []
    for q, question in enumerate(questions):
        await ask(searcher, names[q % len(names)], f"{question} #{q}", samples)
    rows.append(["Search path, new queries, sequential", *_figures(samples), "n/a"])
    searcher = searcher_for()
    samples = []
    for start in range(0, len(questions), clients):
        await asyncio.gather(*(
            ask(searcher, names[q % len(names)], f"{questions[q]} ~{q}", samples)
            for q in range(start, min(start + clients, len(questions)))
        ))  # fmt: skip
    rows.append([f"Search path, new queries, {clients} concurrent", *_figures(samples), "n/a"])
    samples = []
    for q, question in enumerate(questions):  # the same queries again: cache hits
        await ask(searcher, names[q % len(names)], f"{question} ~{q}", samples)
    rows.append(["Search path, repeated queries (cached)", *_figures(samples), "n/a"])
    return rows


async def search(
    database_url: str, admin_url: str, embedder: LocalEmbedder, tenants: int, per_tenant: int,
    queries: int, clients: int,
) -> None:  # fmt: skip
    rng = random.Random(2)
    texts = [passage(rng) for _ in range(per_tenant)]
    names = [f"bench-search-{n}" for n in range(tenants)]
    for name in names:
        await _tenant(admin_url, name)
    questions = [rng.choice(QUESTIONS).format(p=rng.choice(PRODUCTS)) for _ in range(queries)]
    query_vectors = await embedder.embed(questions)
    engine = db.create_engine(database_url, pool_size=2)
    with tempfile.TemporaryDirectory() as directory:
        index, matrix = await _index(embedder, directory, names, texts)
        truth = np.argsort(-(query_vectors @ matrix.T), axis=1)[:, :10]
        rows = await _index_rows(index, names, questions, query_vectors, truth)
        samples: list[float] = []
        for q in range(queries):
            for _ in names:
                began = time.perf_counter()
                scores = matrix @ query_vectors[q]
                np.argpartition(-scores, 10)[:10]
                _timed(samples, began)
        rows.append(["numpy brute force (exact, dense)", *_figures(samples), 1.0])
        settings = TenantSettings(engine)

        def searcher_for() -> Searcher:
            return Searcher(index, QueryVectors(embedder.embed_queries), settings)

        rows += await _path_rows(searcher_for, embedder, names, questions, clients)
        await index.close()
    await engine.dispose()
    print(
        f"\nsearch, {tenants} tenants x {per_tenant} chunks, top-10, tenant filter "
        "(goal p95 <= 20 ms for the Search path)"
    )
    print_table(["variant", "n", "p50 ms", "p95 ms", "max ms", "recall@10"], rows)
    base = rows[3][3]  # brute force p95
    print("  p95 ratios to brute force: " + ", ".join(
        f"{row[0]}: {float(row[3]) / float(base):.1f}x" for row in rows if row is not rows[3]
    ))  # fmt: skip


def _figures(samples: list[float]) -> list[float | int]:
    ordered = sorted(samples)
    return [len(ordered), percentile(ordered, 50), percentile(ordered, 95), ordered[-1]]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--tenants", type=int, default=5)
    parser.add_argument("--per-tenant", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--skip-ingestion", action="store_true")
    parser.add_argument("--precision", choices=["auto", "float32", "bfloat16"], default="auto")
    args = parser.parse_args()
    embedder = LocalEmbedder(precision=args.precision)
    print(f"local model precision: {args.precision} -> {await embedder.precision()}")
    await embedder.embed(["warm up"])
    await embedder.embed_queries(["warm up"])
    with tempfile.TemporaryDirectory() as directory:
        server = PostgresServer(Path(directory) / "pg", free_port(), fast=True)
        server.start()
        try:
            await db.ensure_database(server.url, DATABASE)
            admin = with_database(server.url, DATABASE)
            await asyncio.to_thread(migrate.upgrade, admin)
            app = with_database(server.url, DATABASE, APP_ROLE)
            if not args.skip_ingestion:
                await ingestion(app, admin, embedder, args.documents, args.concurrency)
            await search(
                app, admin, embedder, args.tenants, args.per_tenant, args.queries, args.clients
            )
        finally:
            server.stop()
            embedder.close()


if __name__ == "__main__":
    asyncio.run(main())
