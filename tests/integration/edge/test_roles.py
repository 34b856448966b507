"""A key acting for a user holds at most what the user's role allows, and its tokens carry
the role: a viewer's key never writes, whatever scopes it was created with."""

from __future__ import annotations

import uuid

import grpc
import pytest

from services.kit.devstack import Platform
from supportmesh.control.v1 import control_service_pb2 as cpb
from supportmesh.control.v1 import control_service_pb2_grpc as cpb_grpc
from supportmesh.control.v1 import resources_pb2 as res
from tests.integration.edge import provision
from tests.integration.edge.conftest import TRANSPORTS, Edge, api_key, bearer
from tests.integration.edge.test_tokens import claims_of

ASKED = ("router:decide", "runs:read", "admin")


async def key_of_user(
    platform: Platform, tenant: str, role: res.UserRole.ValueType
) -> provision.Key:
    """A user with ``role`` and a key acting for them, created with the ASKED scopes."""
    operator = provision.operator(platform)
    async with grpc.aio.insecure_channel(provision.edge_target(platform)) as channel:
        stub = cpb_grpc.ControlServiceStub(channel)
        user = await stub.CreateUser(
            cpb.CreateUserRequest(
                parent=f"tenants/{tenant}",
                user=res.User(email=f"{uuid.uuid4().hex[:8]}@example.com", role=role),
                request_id=uuid.uuid4().hex,
            ),
            metadata=operator,
            timeout=provision.TIMEOUT,
        )
        created = await stub.CreateApiKey(
            cpb.CreateApiKeyRequest(
                parent=f"tenants/{tenant}",
                api_key=res.ApiKey(display_name="user key", scopes=ASKED, user=user.user.name),
                request_id=uuid.uuid4().hex,
            ),
            metadata=operator,
            timeout=provision.TIMEOUT,
        )
    return provision.Key(tenant, created.api_key.name, created.secret)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_viewers_key_cannot_call_what_its_role_does_not_allow(
    edge: Edge, platform: Platform, tenant: str, transport: str
) -> None:
    viewer = await key_of_user(platform, tenant, res.USER_ROLE_VIEWER)
    outcome = await edge.decide(transport, api_key(viewer))
    assert (outcome.http, outcome.code, outcome.reason) == (403, 7, "SCOPE_MISSING"), outcome
    agent = await key_of_user(platform, tenant, res.USER_ROLE_AGENT)
    assert (await edge.decide(transport, api_key(agent))).http == 200


async def test_tokens_carry_the_role_and_only_the_scopes_it_allows(
    edge: Edge, platform: Platform, tenant: str
) -> None:
    viewer = await key_of_user(platform, tenant, res.USER_ROLE_VIEWER)
    issued = await provision.issue_token(platform, viewer)
    assert list(issued.scopes) == ["runs:read"]
    claims = claims_of(issued.access_token)
    assert (claims["roles"], claims["scopes"]) == (["VIEWER"], ["runs:read"])
    assert (await edge.decide("rest", bearer(issued.access_token))).http == 403

    agent = await key_of_user(platform, tenant, res.USER_ROLE_AGENT)
    issued = await provision.issue_token(platform, agent)
    claims = claims_of(issued.access_token)
    # The agent role allows deciding and reading runs; the key's admin scope is dropped.
    expected = (["AGENT"], ["router:decide", "runs:read"])
    assert (claims["roles"], sorted(claims["scopes"])) == expected
    assert (await edge.decide("grpc", bearer(issued.access_token))).http == 200

    admin = await key_of_user(platform, tenant, res.USER_ROLE_ADMIN)
    claims = claims_of((await provision.issue_token(platform, admin)).access_token)
    assert (claims["roles"], sorted(claims["scopes"])) == (["ADMIN"], sorted(ASKED))
