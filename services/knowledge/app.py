"""Composition root of the knowledge service (and of its ingestion worker)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from pydantic import Field
from pydantic_settings import SettingsConfigDict
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import db, events
from services.kit.settings import ServiceSettings
from services.knowledge import tasks
from services.knowledge.edge_index import EdgeIndex
from services.knowledge.embeddings import Embedder, LocalEmbedder, OpenAIEmbedder
from services.knowledge.index import VectorIndex
from services.knowledge.ingest import Ingestion, Limits
from services.knowledge.lexical import Lexical
from services.knowledge.minilm import Precision
from services.knowledge.qdrant_index import QdrantIndex
from services.knowledge.query_vectors import QueryVectors
from services.knowledge.search import Searcher
from services.knowledge.servicer import KnowledgeServicer
from services.knowledge.store import Documents
from services.knowledge.tenant_settings import TenantSettings
from services.knowledge.worker import ChunkingConfig, Processor
from supportmesh.events.v1 import events_pb2
from supportmesh.knowledge.v1 import knowledge_service_pb2 as pb
from supportmesh.knowledge.v1 import knowledge_service_pb2_grpc as pb_grpc

_log = logging.getLogger("supportmesh.knowledge")
SERVICE_NAMES = (pb.DESCRIPTOR.services_by_name["KnowledgeService"].full_name,)


class KnowledgeSettings(ServiceSettings):
    """Knowledge settings, read from ``KNOWLEDGE_*`` variables (``QDRANT_URL`` unprefixed)."""

    model_config = SettingsConfigDict(env_prefix="KNOWLEDGE_", frozen=True, extra="ignore")

    service_name: str = "knowledge"
    index_path: Path = Field(
        Path(".supportmesh/data/knowledge"),
        description="Directory of the local (qdrant-edge) index when QDRANT_URL is unset.",
    )
    qdrant_api_key: str = Field("", description="API key of the Qdrant server, if it needs one.")
    inline_worker: bool | None = Field(
        None, description="Run the ingestion consumer in the service; unset: when local index."
    )
    max_document_bytes: int = Field(3 * 1024 * 1024, description="Largest document accepted.")
    chunk_tokens: int = Field(150, description="Largest chunk, in word/punctuation tokens.")
    chunk_overlap: int = Field(30, description="Tokens consecutive chunks share.")
    embeddings_base_url: str = Field(
        "", description="OpenAI-compatible embeddings endpoint; empty: the local MiniLM model."
    )
    embeddings_model: str = Field("text-embedding-3-small", description="Endpoint's model.")
    embeddings_dimension: int = Field(1536, description="Endpoint's vector length.")
    embeddings_api_key: str = Field("", description="Endpoint's API key.")
    embed_threads: int = Field(1, description="Torch threads per local model call.")
    embed_precision: Precision = Field(
        "auto", description="Local model weights: bfloat16 where the CPU has it natively (auto)."
    )
    embed_bulk_threads: int = Field(
        2, description="Threads encoding document chunks in parallel (queries have their own)."
    )
    ingest_concurrency: int = Field(
        2, description="Documents one worker indexes at once (pulls from the same queue)."
    )
    settings_ttl_s: float = Field(5.0, description="How long tenant search settings are cached.")
    sweep: bool = Field(
        True,
        description="Re-queue lost work items and documents of another index generation; off "
        "for a scratch worker whose index is not the database's index of record.",
    )
    sweep_every_s: float = Field(30.0, description="How often lost work items are looked for.")
    sweep_waiting_s: float = Field(120.0, description="Wait after which a document is re-queued.")
    db_pool_size: int = Field(5, description="Connections kept open to PostgreSQL.")
    test_pause_at: str = Field(
        "", description="Tests only: a worker checkpoint (processing, indexed) to pause at."
    )
    test_pause_s: float = Field(0.0, description="Tests only: how long to pause there.")


def make_embedder(settings: KnowledgeSettings) -> Embedder:
    """The OpenAI-compatible endpoint when configured, else the packaged local model."""
    if settings.embeddings_base_url:
        return OpenAIEmbedder(
            settings.embeddings_base_url,
            settings.embeddings_model,
            settings.embeddings_dimension,
            settings.embeddings_api_key,
        )
    return LocalEmbedder(
        threads=settings.embed_threads,
        bulk_threads=settings.embed_bulk_threads,
        precision=settings.embed_precision,
    )


def make_index(settings: KnowledgeSettings) -> VectorIndex:
    """A Qdrant server when QDRANT_URL is set, else the in-process edge shard."""
    if settings.infra.qdrant_url:
        return QdrantIndex(settings.infra.qdrant_url, settings.qdrant_api_key)
    return EdgeIndex(settings.index_path)


@dataclass
class Bus:
    """The NATS connection, once it is made."""

    nats: NatsClient | None = None
    js: JetStreamContext | None = None

    def jetstream(self) -> JetStreamContext | None:
        """The JetStream context, or None while disconnected."""
        return self.js

    async def publish(self, event: events_pb2.DocumentProcessedEvent, msg_id: str) -> None:
        """Publish an ``ingest.doc.processed`` event."""
        if self.js is None:
            raise RuntimeError("NATS is not connected")
        await events.publish(self.js, events.INGEST_DOC_PROCESSED, event, msg_id)


@dataclass
class KnowledgeApp:
    """The servicer's parts and the background work around them."""

    settings: KnowledgeSettings
    engine: AsyncEngine
    documents: Documents
    index: VectorIndex
    embedder: Embedder
    processor: Processor
    servicer: KnowledgeServicer
    queue: tasks.TaskQueue
    bus: Bus
    service_names: tuple[str, ...] = SERVICE_NAMES
    consumers: list[events.Consumer] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def register(self, server: grpc.aio.Server) -> None:
        """Add the KnowledgeService to a server."""
        pb_grpc.add_KnowledgeServiceServicer_to_server(self.servicer, server)

    @property
    def works(self) -> bool:
        """Whether this process consumes the ingestion queue."""
        inline = self.settings.inline_worker
        return inline if inline is not None else not self.settings.infra.qdrant_url

    async def start(self, *, work: bool) -> None:
        """Open the index, start loading the model, connect NATS; consume when ``work``."""
        if isinstance(self.embedder, LocalEmbedder):
            self.embedder.start_loading()
        self.processor.meta = await self.index.open(self.embedder.model, self.embedder.dimension)
        if self.settings.infra.nats_url:
            self._tasks.append(asyncio.create_task(self._connect(work)))

    async def _connect(self, work: bool) -> None:
        # Retried until it works: NATS may come up after this service in a fresh deployment.
        while self.bus.js is None:
            try:
                self.bus.nats, self.bus.js = await events.connect(self.settings.infra.nats_url)
            except Exception:  # noqa: BLE001 - keep serving reads; ingestion waits for NATS
                _log.warning("NATS not reachable; retrying", exc_info=True)
                await asyncio.sleep(2.0)
        if not work:
            return
        sweeper = tasks.Sweeper(
            self.documents, self.queue, self.bus.jetstream, self.settings.sweep_waiting_s
        )
        assert self.processor.meta is not None
        if self.settings.sweep:
            try:
                await sweeper.sweep(self.processor.meta.generation)
            except Exception:  # noqa: BLE001 - the periodic sweep tries again
                _log.warning("startup sweep failed", exc_info=True)
            self._tasks.append(asyncio.create_task(sweeper.run(self.settings.sweep_every_s)))
        # Several pullers on the one durable consumer: while one document waits on PostgreSQL
        # or the index, another's chunks are being encoded.
        for _ in range(max(1, self.settings.ingest_concurrency)):
            consumer = events.Consumer(self.bus.js, tasks.SPEC, self.processor.handle, batch=1)
            await consumer.start()
            self.consumers.append(consumer)
        print("READY knowledge-worker", flush=True)

    async def stop(self) -> None:
        """Stop consuming, close connections and the index."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for consumer in self.consumers:
            await consumer.stop()
        if self.bus.nats is not None:
            await self.bus.nats.close()
        await self.index.close()
        if isinstance(self.embedder, OpenAIEmbedder):
            await self.embedder.aclose()
        if isinstance(self.embedder, LocalEmbedder):
            self.embedder.close()
        await self.engine.dispose()


def build(settings: KnowledgeSettings) -> KnowledgeApp:
    """Wire the service from settings; connections open in ``start``."""
    if not settings.infra.database_url:
        raise RuntimeError("the knowledge service needs DATABASE_URL")
    engine = db.create_engine(settings.infra.database_url, pool_size=settings.db_pool_size)
    documents = Documents(engine)
    index, embedder = make_index(settings), make_embedder(settings)
    bus = Bus()
    queue = tasks.TaskQueue(bus.jetstream)

    async def checkpoint(name: str) -> None:
        if settings.test_pause_at == name:
            print(f"PAUSED {name}", flush=True)
            await asyncio.sleep(settings.test_pause_s)

    chunking = ChunkingConfig(settings.chunk_tokens, settings.chunk_overlap)
    lexical = Lexical()
    processor = Processor(documents, index, embedder, bus.publish, chunking, checkpoint, lexical)
    tenant_settings = TenantSettings(engine, settings.settings_ttl_s)
    ingestion = Ingestion(documents, queue, Limits(settings.max_document_bytes))
    searcher = Searcher(index, QueryVectors(embedder.embed_queries), tenant_settings, lexical)
    servicer = KnowledgeServicer(documents, ingestion, searcher, tenant_settings, index)
    return KnowledgeApp(
        settings, engine, documents, index, embedder, processor, servicer, queue, bus
    )
