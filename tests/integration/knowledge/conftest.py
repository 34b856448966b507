"""Knowledge through the real edge: a tenant, a key with knowledge scopes, and a client."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass

import grpc
import httpx
import pytest
from fpdf import FPDF

from services.kit import errors
from services.kit.devstack import Platform
from supportmesh.knowledge.v1 import knowledge_service_pb2 as pb
from supportmesh.knowledge.v1 import knowledge_service_pb2_grpc as pb_grpc
from tests.integration.edge import provision

SCOPES = ("knowledge:read", "knowledge:write")
DONE = (pb.DOCUMENT_STATUS_INDEXED, pb.DOCUMENT_STATUS_FAILED)


def pdf_bytes(pages: list[str], title: str = "") -> bytes:
    """A PDF with one page per text, made with fpdf2."""
    document = FPDF()
    if title:
        document.set_title(title)
    document.set_font("helvetica", size=12)
    for text in pages:
        document.add_page()
        document.multi_cell(0, 8, text)
    buffer = io.BytesIO()
    document.output(buffer)
    return buffer.getvalue()


@dataclass
class Client:
    """KnowledgeService calls through the edge as one tenant's API key."""

    tenant: str
    key: provision.Key
    stub: pb_grpc.KnowledgeServiceAsyncStub
    http: httpx.AsyncClient

    @property
    def parent(self) -> str:
        return f"tenants/{self.tenant}"

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("x-api-key", self.key.secret),)

    async def ingest(self, media_type: str, body: str | bytes, **fields: object) -> pb.Document:
        request = pb.IngestDocumentRequest(
            parent=self.parent, media_type=media_type, request_id=uuid.uuid4().hex
        )
        for name, value in fields.items():
            if name == "labels":
                assert isinstance(value, Mapping)
                request.labels.update(value)
            else:
                setattr(request, name, value)
        if isinstance(body, bytes):
            request.content = body
        else:
            request.text = body
        reply = await self.stub.IngestDocument(request, metadata=self.metadata, timeout=20)
        return reply.document

    async def get(self, name: str) -> pb.Document:
        request = pb.GetDocumentRequest(name=name)
        reply = await self.stub.GetDocument(request, metadata=self.metadata, timeout=10)
        return reply.document

    async def wait(self, name: str, timeout_s: float = 90.0) -> pb.Document:
        """The document once INDEXED or FAILED."""
        for _ in range(int(timeout_s / 0.2)):
            document = await self.get(name)
            if document.status in DONE:
                return document
            await asyncio.sleep(0.2)
        raise AssertionError(f"{name} still {pb.DocumentStatus.Name(document.status)}")

    async def search(self, query: str, **fields: object) -> pb.SearchResponse:
        request = pb.SearchRequest(parent=self.parent, query=query)
        for name, value in fields.items():
            if name == "filters":
                assert isinstance(value, Mapping)
                request.filters.update(value)
            else:
                setattr(request, name, value)
        reply: pb.SearchResponse = await self.stub.Search(
            request, metadata=self.metadata, timeout=10
        )
        return reply


async def failure(call: Awaitable[object]) -> errors.RemoteError:
    """The error a gRPC call ends with."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return errors.parse_rpc_error(caught.value)


@pytest.fixture(scope="module")
async def channel(platform: Platform) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(provision.edge_target(platform)) as opened:
        yield opened


@pytest.fixture(scope="module")
async def http(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=platform.edge_url, timeout=20) as client:
        yield client


async def new_client(
    platform: Platform, channel: grpc.aio.Channel, http: httpx.AsyncClient
) -> Client:
    """A fresh tenant with a knowledge key."""
    tenant = await provision.create_tenant(platform)
    key = await provision.create_key(platform, tenant, SCOPES)
    return Client(tenant, key, pb_grpc.KnowledgeServiceStub(channel), http)


@pytest.fixture(scope="module")
async def client(platform: Platform, channel: grpc.aio.Channel, http: httpx.AsyncClient) -> Client:
    return await new_client(platform, channel, http)
