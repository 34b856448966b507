"""A worker killed mid-document: the next one finishes it, indexed exactly once.

The workers are real ``python -m services.knowledge worker`` processes on their own NATS
server (so the platform's inline worker cannot take the item) and their own local index,
sharing the platform's PostgreSQL. A test-only setting makes the first worker stop at a
checkpoint after it took the work item and before its ack; it is SIGKILLed there, JetStream
redelivers the item after the ack wait, and a second worker completes it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from services.kit import db, events
from services.kit.devstack import Platform
from services.kit.stack import ManagedProcess, NatsServer, free_port
from services.knowledge.edge_index import EdgeIndex
from services.knowledge.embeddings import LOCAL_DIMENSION, LOCAL_MODEL
from services.knowledge.ingest import Limits, submission
from services.knowledge.store import Documents
from services.knowledge.tasks import TaskQueue
from supportmesh.knowledge.v1 import knowledge_service_pb2 as pb

ARTICLE = "\n\n".join(
    f"Section {n}. Parcels to zone {n} travel by road and arrive within {n + 2} days; "
    f"returns from zone {n} are collected by the courier on request."
    for n in range(12)
)


@pytest.fixture(scope="module")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("crash-nats"), free_port(), free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
async def documents(platform: Platform) -> AsyncIterator[Documents]:
    engine = db.create_engine(platform.database_url, pool_size=2)
    yield Documents(engine)
    await engine.dispose()


async def _tenant(platform: Platform) -> str:
    tenant = f"crash-{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(platform.admin_database_url)
    try:
        await connection.execute(
            "INSERT INTO app.tenants (tenant_id, display_name, plan_id) VALUES ($1, $1, 'pro')",
            tenant,
        )
    finally:
        await connection.close()
    return tenant


def _worker(
    platform: Platform, nats: NatsServer, index: Path, log: Path, pause_at: str = ""
) -> ManagedProcess:
    env = {
        **os.environ,
        "DATABASE_URL": platform.database_url,
        "NATS_URL": nats.url,
        "KNOWLEDGE_INDEX_PATH": str(index),
        "KNOWLEDGE_PORT": "0",
        "KNOWLEDGE_TEST_PAUSE_AT": pause_at,
        "KNOWLEDGE_TEST_PAUSE_S": "600",
        # A scratch index beside the platform's: it must not claim the platform's documents.
        "KNOWLEDGE_SWEEP": "false",
    }
    return ManagedProcess(
        [sys.executable, "-m", "services.knowledge", "worker"],
        log_path=log,
        name="knowledge-worker",
        env=env,
        stop_signal=signal.SIGKILL if pause_at else signal.SIGTERM,
    )


async def _status(documents: Documents, tenant: str, document_id: str) -> str:
    return str((await documents.get(tenant, document_id)).status)


@pytest.mark.parametrize("checkpoint", ["processing", "indexed"])
async def test_a_killed_worker_leaves_the_document_indexed_exactly_once(
    platform: Platform,
    nats: NatsServer,
    documents: Documents,
    tmp_path: Path,
    checkpoint: str,
) -> None:
    client, js = await events.connect(nats.url)
    try:
        await events.declare(js)
        tenant = await _tenant(platform)
        request = pb.IngestDocumentRequest(
            parent=f"tenants/{tenant}", text=ARTICLE, media_type="text/plain", request_id="c1"
        )
        (accepted,) = await documents.accept(tenant, [(submission(request, Limits(1 << 20)), "c1")])
        document_id = str(accepted.row.document_id)
        await TaskQueue(lambda: js).publish(tenant, document_id, 1)

        first = _worker(platform, nats, tmp_path / "index", tmp_path / "w1.log", checkpoint)
        first.start()
        try:
            await asyncio.to_thread(
                first.wait_ready, lambda: "PAUSED" in first.log_path.read_text(), 120
            )
            assert await _status(documents, tenant, document_id) == "PROCESSING"
        finally:
            first.stop()  # SIGKILL: no drain, no ack, the work item stays unacknowledged

        second = _worker(platform, nats, tmp_path / "index", tmp_path / "w2.log")
        second.start()
        try:
            for _ in range(600):
                if await _status(documents, tenant, document_id) in ("INDEXED", "FAILED"):
                    break
                await asyncio.sleep(0.2)
        finally:
            second.stop()
        row = await documents.get(tenant, document_id)
        assert row.status == "INDEXED", (row.failure_reason, second.log_path.read_text()[-2000:])
        info = await js.consumer_info("INGEST_WORK", "knowledge-ingest")
        assert info.num_ack_pending == 0
        assert info.num_pending == 0
    finally:
        await client.close()

    index = EdgeIndex(tmp_path / "index")
    await index.open(LOCAL_MODEL, LOCAL_DIMENSION)
    try:
        points = await index.count(tenant, document_id)
    finally:
        await index.close()
    assert row.chunk_count > 1
    assert points == row.chunk_count  # no duplicate chunks from the killed attempt
