"""Operator commands against a running platform, through the Envoy edge like any client.

``supportmesh tenant create`` and ``supportmesh key create`` call ControlService over native
gRPC with the platform operator's API key, so a fresh ``make dev`` can be used at once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import grpc

from supportmesh.control.v1 import control_service_pb2 as pb
from supportmesh.control.v1 import control_service_pb2_grpc as pb_grpc
from supportmesh.control.v1 import resources_pb2 as res

TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Edge:
    """Where the edge is and which key the operator presents."""

    target: str
    operator_key: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Metadata carrying the operator key."""
        return (("x-api-key", self.operator_key),)


async def create_tenant(edge: Edge, tenant_id: str, plan: str, display_name: str) -> res.Tenant:
    """Create a tenant (idempotent for the same id: the request id derives from it)."""
    request = pb.CreateTenantRequest(
        tenant=res.Tenant(display_name=display_name or tenant_id, plan=f"plans/{plan}"),
        tenant_id=tenant_id,
        request_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"supportmesh:tenant:{tenant_id}")),
    )
    async with grpc.aio.insecure_channel(edge.target) as channel:
        stub = pb_grpc.ControlServiceStub(channel)
        reply = await stub.CreateTenant(request, metadata=edge.metadata, timeout=TIMEOUT_S)
    return reply.tenant


async def create_key(
    edge: Edge, tenant_id: str, scopes: list[str], requests_per_minute: int, display_name: str
) -> tuple[str, str]:
    """Create an API key for a tenant; returns (key name, secret shown once)."""
    request = pb.CreateApiKeyRequest(
        parent=f"tenants/{tenant_id}",
        api_key=res.ApiKey(
            display_name=display_name, scopes=scopes, requests_per_minute=requests_per_minute
        ),
        request_id=uuid.uuid4().hex,
    )
    async with grpc.aio.insecure_channel(edge.target) as channel:
        stub = pb_grpc.ControlServiceStub(channel)
        reply = await stub.CreateApiKey(request, metadata=edge.metadata, timeout=TIMEOUT_S)
    return reply.api_key.name, reply.secret
