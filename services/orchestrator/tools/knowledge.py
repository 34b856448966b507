"""The knowledge tool: search a tenant's knowledge through the knowledge service's Search RPC.

The orchestrator calls on behalf of a tenant it has already authenticated, so it sends the
tenant as the trusted ``x-supportmesh-tenant`` metadata and names it in ``parent``; the call
carries the tool's timeout as its gRPC deadline (the kit's servers refuse calls without one).
"""

from __future__ import annotations

import grpc

from services.kit import context, errors
from services.orchestrator.tools.spec import READ_ONLY, JsonObject, ToolFn, obj, tool_spec
from supportmesh.knowledge.v1 import knowledge_service_pb2 as knowledge_pb2
from supportmesh.knowledge.v1 import knowledge_service_pb2_grpc as knowledge_grpc
from supportmesh.spec.v1 import tool_pb2

DEPENDENCY = "knowledge"
TIMEOUT_S = 5.0
_SCORE = {"type": "number"}
_ERRORS: dict[grpc.StatusCode, type[errors.DomainError]] = {
    error.code: error
    for error in (
        errors.InvalidArgument, errors.NotFound, errors.AlreadyExists, errors.Unauthenticated,
        errors.PermissionDenied, errors.ResourceExhausted, errors.FailedPrecondition,
        errors.Aborted, errors.Unavailable, errors.DeadlineExceeded, errors.Unimplemented,
    )
}  # fmt: skip


def specs() -> list[tool_pb2.ToolSpec]:
    """The knowledge tool's spec."""
    search_in = obj(
        {
            "query": {"type": "string", "minLength": 1, "maxLength": 4000},
            "top_k": {"type": "integer", "minimum": 1, "maximum": 50},
            "filters": {"type": "object", "additionalProperties": {"type": "string"}},
            "min_score": {"type": "number", "minimum": 0, "maximum": 1},
        },
        ("query",),
    )
    passage = obj(
        {
            "score": _SCORE,
            "document_id": {"type": "string"},
            "title": {"type": "string"},
            "chunk_id": {"type": "string"},
            "text": {"type": "string"},
            "uri": {"type": "string"},
        },
        ("score", "document_id", "chunk_id", "text"),
    )
    faq = obj(
        {
            "score": _SCORE,
            "question": {"type": "string"},
            "answer": {"type": "string"},
            "document_id": {"type": "string"},
            "uri": {"type": "string"},
        },
        ("score", "question", "answer", "document_id"),
    )
    search_out = obj(
        {
            "passages": {"type": "array", "items": passage},
            "faq_answers": {"type": "array", "items": faq},
        },
        ("passages", "faq_answers"),
    )
    return [
        tool_spec(
            "knowledge.search",
            "Find the tenant's knowledge passages and FAQ answers closest to a query.",
            input_schema=search_in,
            output_schema=search_out,
            side_effect=READ_ONLY,
            timeout_s=TIMEOUT_S,
            max_concurrency=16,
        )
    ]


def search_request(tenant_id: str, data: JsonObject) -> knowledge_pb2.SearchRequest:
    """The SearchRequest for a tool input."""
    return knowledge_pb2.SearchRequest(
        parent=f"tenants/{tenant_id}",
        query=str(data["query"]),
        top_k=int(data.get("top_k", 0)),
        filters={str(key): str(value) for key, value in (data.get("filters") or {}).items()},
        min_score=float(data.get("min_score", 0.0)),
    )


def search_output(response: knowledge_pb2.SearchResponse) -> JsonObject:
    """The tool output for a SearchResponse."""
    return {
        "passages": [
            {
                "score": float(passage.score),
                "document_id": passage.document_id,
                "title": passage.title,
                "chunk_id": passage.chunk_id,
                "text": passage.text,
                "uri": passage.citation.uri,
            }
            for passage in response.passages
        ],
        "faq_answers": [
            {
                "score": float(answer.score),
                "question": answer.question,
                "answer": answer.answer,
                "document_id": answer.document_id,
                "uri": answer.citation.uri,
            }
            for answer in response.faq_answers
        ],
    }


def from_rpc_error(error: grpc.RpcError) -> errors.DomainError:
    """The domain error a failed call stands for, keeping its reason."""
    remote = errors.parse_rpc_error(error)
    kind = _ERRORS.get(remote.code, errors.Internal)
    reason = errors.reason_value(remote.reason) if remote.reason else None
    return kind(
        f"knowledge: {remote.message}",
        reason=reason or None,
        metadata=dict(remote.metadata),
        retry_after_s=remote.retry_after_s,
    )


class KnowledgeTools:
    """The knowledge tool's implementation over a channel to the knowledge service."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        """Call the knowledge service over ``channel``."""
        self._stub = knowledge_grpc.KnowledgeServiceStub(channel)

    def bindings(self) -> dict[str, ToolFn]:
        """Implementation by tool name."""
        return {"knowledge.search": self.search}

    async def search(self, tenant_id: str, data: JsonObject, key: str) -> JsonObject:
        """Run Search for the tenant."""
        metadata = ((context.TENANT_KEY, tenant_id),)
        try:
            response = await self._stub.Search(
                search_request(tenant_id, data), timeout=TIMEOUT_S, metadata=metadata
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
        return search_output(response)
