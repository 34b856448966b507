"""KnowledgeService servicer: proto in, the tenant from the verified caller, logic, proto out."""

# ruff: noqa: N802  (method names are the gRPC method names)

from __future__ import annotations

from typing import Any

import grpc
from opentelemetry import trace

from services.knowledge import names, paging, resources
from services.knowledge.index import Removal, VectorIndex
from services.knowledge.ingest import Ingestion
from services.knowledge.search import Searcher
from services.knowledge.store import Documents
from services.knowledge.tenant_settings import TenantSettings
from supportmesh.knowledge.v1 import knowledge_service_pb2 as pb
from supportmesh.knowledge.v1 import knowledge_service_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]


def _span(tenant_id: str) -> None:
    trace.get_current_span().set_attribute("tenant_id", tenant_id)


class KnowledgeServicer(pb_grpc.KnowledgeServiceServicer):
    """Thin adapter: every tenant comes from ``names.authorize_*`` (trusted metadata)."""

    def __init__(
        self,
        documents: Documents,
        ingestion: Ingestion,
        searcher: Searcher,
        settings: TenantSettings,
        index: VectorIndex,
    ) -> None:
        """Serve from the knowledge service's parts."""
        self._documents = documents
        self._ingestion = ingestion
        self._searcher = searcher
        self._settings = settings
        self._index = index

    async def IngestDocument(
        self, request: pb.IngestDocumentRequest, context: Context
    ) -> pb.IngestDocumentResponse:
        """Accept one document for indexing."""
        tenant = names.authorize_parent(request.parent)
        _span(tenant)
        return pb.IngestDocumentResponse(document=await self._ingestion.ingest(tenant, request))

    async def BatchIngestDocuments(
        self, request: pb.BatchIngestDocumentsRequest, context: Context
    ) -> pb.BatchIngestDocumentsResponse:
        """Accept up to 100 documents, all or none."""
        tenant = names.authorize_parent(request.parent)
        _span(tenant)
        documents = await self._ingestion.ingest_batch(tenant, request)
        return pb.BatchIngestDocumentsResponse(documents=documents)

    async def GetDocument(
        self, request: pb.GetDocumentRequest, context: Context
    ) -> pb.GetDocumentResponse:
        """Return a document and its status."""
        tenant, document_id = names.authorize_document(request.name)
        _span(tenant)
        row = await self._documents.get(tenant, document_id)
        return pb.GetDocumentResponse(document=resources.document(tenant, row))

    async def ListDocuments(
        self, request: pb.ListDocumentsRequest, context: Context
    ) -> pb.ListDocumentsResponse:
        """List documents, newest first."""
        tenant = names.authorize_parent(request.parent)
        _span(tenant)
        status = names.STATUS_NAMES.get(request.status, "")
        size = paging.page_size(request.page_size)
        rows, token = await self._documents.page(tenant, size, request.page_token, status)
        return pb.ListDocumentsResponse(
            documents=[resources.document(tenant, row) for row in rows], next_page_token=token
        )

    async def DeleteDocument(
        self, request: pb.DeleteDocumentRequest, context: Context
    ) -> pb.DeleteDocumentResponse:
        """Remove a document and its chunks."""
        tenant, document_id = names.authorize_document(request.name)
        _span(tenant)
        await self._documents.delete(tenant, document_id, request.request_id)
        # Also on a replay: a first attempt may have failed between the row and the index.
        await self._index.delete(Removal(tenant, document_id))
        return pb.DeleteDocumentResponse()

    async def Search(self, request: pb.SearchRequest, context: Context) -> pb.SearchResponse:
        """Find passages and direct FAQ answers."""
        tenant = names.authorize_parent(request.parent)
        _span(tenant)
        return await self._searcher.search(tenant, request)

    async def GetKnowledgeSettings(
        self, request: pb.GetKnowledgeSettingsRequest, context: Context
    ) -> pb.GetKnowledgeSettingsResponse:
        """Return the tenant's search settings."""
        tenant = names.authorize_settings(request.name)
        return pb.GetKnowledgeSettingsResponse(knowledge_settings=await self._settings.get(tenant))

    async def UpdateKnowledgeSettings(
        self, request: pb.UpdateKnowledgeSettingsRequest, context: Context
    ) -> pb.UpdateKnowledgeSettingsResponse:
        """Change the tenant's search settings."""
        tenant = names.authorize_settings(
            request.knowledge_settings.name, "knowledge_settings.name"
        )
        stored = await self._settings.put(tenant, request.knowledge_settings)
        return pb.UpdateKnowledgeSettingsResponse(knowledge_settings=stored)
