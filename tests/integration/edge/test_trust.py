"""Only the edge vouches for callers: client-supplied x-supportmesh-* headers are dropped, and
a tenant named in a body or in the x-tenant-id header must be the credential's."""

from __future__ import annotations

import grpc
import pytest

from services.kit import context, errors
from services.kit.devstack import Platform
from supportmesh.control.v1 import control_service_pb2 as cpb
from supportmesh.control.v1 import control_service_pb2_grpc as cpb_grpc
from supportmesh.control.v1 import resources_pb2 as res
from tests.integration.edge import provision
from tests.integration.edge.conftest import TRANSPORTS, Edge, api_key

pytestmark = pytest.mark.parametrize("transport", TRANSPORTS)


async def test_body_tenant_other_than_the_credentials_is_refused(
    edge: Edge, platform: Platform, key: provision.Key, transport: str
) -> None:
    victim = await provision.create_tenant(platform)
    outcome = await edge.decide(transport, api_key(key), tenant_id=victim)
    assert (outcome.http, outcome.code, outcome.reason) == (403, 7, "TENANT_MISMATCH"), outcome
    assert (await edge.decide(transport, api_key(key), tenant_id=key.tenant)).http == 200


async def test_client_tenant_header_other_than_the_credentials_is_refused(
    edge: Edge, platform: Platform, key: provision.Key, transport: str
) -> None:
    victim = await provision.create_tenant(platform)
    claimed = {**api_key(key), context.CLIENT_TENANT_KEY: victim}
    outcome = await edge.decide(transport, claimed)
    assert (outcome.http, outcome.code, outcome.reason) == (403, 7, "TENANT_MISMATCH"), outcome
    agreeing = {**api_key(key), context.CLIENT_TENANT_KEY: key.tenant}
    assert (await edge.decide(transport, agreeing)).http == 200


async def test_trusted_tenant_header_from_a_client_is_overwritten(
    edge: Edge, platform: Platform, key: provision.Key, transport: str
) -> None:
    victim = await provision.create_tenant(platform)
    spoofed = {**api_key(key), context.TENANT_KEY: victim}
    # Had the header reached the router, the body naming the victim would have been accepted.
    outcome = await edge.decide(transport, spoofed, tenant_id=victim)
    assert (outcome.http, outcome.reason) == (403, "TENANT_MISMATCH"), outcome
    assert (await edge.decide(transport, spoofed, tenant_id=key.tenant)).http == 200


async def test_client_trusted_headers_are_stripped_when_the_edge_sets_none(
    edge: Edge, platform: Platform, transport: str
) -> None:
    # The operator key carries no tenant, so the edge sets no tenant header: a client's one
    # must not survive to the router either.
    victim = await provision.create_tenant(platform)
    spoofed = {
        "x-api-key": platform.platform_admin_key,
        context.TENANT_KEY: victim,
        context.SCOPES_KEY: "admin",
    }
    outcome = await edge.decide(transport, spoofed, tenant_id=victim)
    assert (outcome.http, outcome.reason) == (401, "TENANT_CONTEXT_MISSING"), outcome


async def test_platform_admin_header_cannot_be_spoofed(
    platform: Platform, tenant: str, transport: str
) -> None:
    del transport  # CreateTenant is checked over gRPC; the header path is the same for REST
    key = await provision.create_key(platform, tenant, scopes=("admin",))
    metadata = (("x-api-key", key.secret), (context.PLATFORM_ADMIN_KEY, "1"))
    request = cpb.CreateTenantRequest(
        tenant=res.Tenant(display_name="Nope", plan="plans/pro"),
        tenant_id=provision.unique(),
        request_id="spoof",
    )
    async with grpc.aio.insecure_channel(provision.edge_target(platform)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await cpb_grpc.ControlServiceStub(channel).CreateTenant(
                request, metadata=metadata, timeout=10
            )
    remote = errors.parse_rpc_error(caught.value)
    assert (remote.code, remote.reason) == (grpc.StatusCode.PERMISSION_DENIED, "SCOPE_MISSING")
