"""The first slice end to end: REST, native gRPC and gRPC-web through Envoy to the router,
each call authenticated with a tenant's API key as a customer's would be."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2

from services.kit import errors, gateway
from services.kit.devstack import Platform
from supportmesh.router.v1 import router_service_pb2 as pb
from supportmesh.router.v1 import router_service_pb2_grpc as pb_grpc
from supportmesh.spec.v1 import tier_pb2
from tests.integration.edge import provision

DECIDE = "/v1/router/decide"


@pytest.fixture(scope="module")
async def key(platform: Platform) -> provision.Key:
    """A tenant's key allowed to call the router."""
    return await provision.create_key(platform, await provision.create_tenant(platform))


@pytest.fixture(scope="module")
def auth(key: provision.Key) -> tuple[tuple[str, str], ...]:
    """gRPC metadata presenting the key."""
    return (("x-api-key", key.secret),)


@pytest.fixture(scope="module")
async def http(platform: Platform, key: provision.Key) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"x-api-key": key.secret}
    async with httpx.AsyncClient(base_url=platform.edge_url, timeout=10, headers=headers) as client:
        yield client


@pytest.fixture(scope="module")
async def edge_stub(platform: Platform) -> AsyncIterator[pb_grpc.RouterServiceAsyncStub]:
    async with grpc.aio.insecure_channel(provision.edge_target(platform)) as channel:
        yield pb_grpc.RouterServiceStub(channel)


def error_info(body: dict[str, Any]) -> dict[str, Any]:
    infos = [d for d in body["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
    assert len(infos) == 1, body
    info: dict[str, Any] = infos[0]
    return info


async def test_rest_decide_speaks_the_seed_router_io(
    http: httpx.AsyncClient, key: provision.Key
) -> None:
    reply = await http.post(
        DECIDE,
        json={
            "query": "This is unacceptable, you charged my card twice!",
            "context": {"channel": "email"},
            "tenant_id": key.tenant,
            "user_id": "u-1",
            "tier_preference": "balanced",
        },
    )
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    # Which tier is the router's business; the edge must carry the seed's IO shape.
    assert body["tier"] in {"SLM_A", "SLM_B", "LLM"}
    assert 0 < body["confidence"] <= 1
    assert "complaint" in body["reasoning"]
    assert isinstance(body["costEstimate"], float)
    assert body["costEstimate"] > 0
    assert isinstance(body["latencyEstimate"], int)
    assert isinstance(body["escalationPath"], list)


async def test_rest_accepts_lower_case_preferences_as_in_the_seed(http: httpx.AsyncClient) -> None:
    fast = await http.post(DECIDE, json={"query": "opening hours?", "tier_preference": "fast"})
    accurate = await http.post(
        DECIDE, json={"query": "opening hours?", "tierPreference": "accurate"}
    )
    assert fast.json()["tier"] == "SLM_A"
    assert accurate.json()["tier"] == "LLM"


async def test_native_grpc_through_envoy_gets_the_same_answer(
    http: httpx.AsyncClient,
    edge_stub: pb_grpc.RouterServiceAsyncStub,
    auth: tuple[tuple[str, str], ...],
) -> None:
    request = pb.DecideRequest(query="Where is my parcel?", tier_preference=tier_pb2.ACCURATE)
    reply = await edge_stub.Decide(request, metadata=auth, timeout=5)
    rest = await http.post(DECIDE, json=json_format.MessageToDict(request))
    assert reply.tier == tier_pb2.LLM
    assert rest.json()["tier"] == tier_pb2.Tier.Name(reply.tier)
    assert rest.json()["reasoning"] == reply.reasoning


async def test_rest_validation_error_is_400_with_reason(http: httpx.AsyncClient) -> None:
    reply = await http.post(DECIDE, json={"query": "   "})
    assert reply.status_code == 400
    body = reply.json()
    assert body["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    info = error_info(body)
    assert (info["reason"], info["domain"]) == ("VALIDATION_FAILED", "supportmesh.io")
    assert info["metadata"]["field"] == "query"


async def test_grpc_validation_error_carries_the_same_reason(
    edge_stub: pb_grpc.RouterServiceAsyncStub, auth: tuple[tuple[str, str], ...]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await edge_stub.Decide(pb.DecideRequest(query=""), metadata=auth, timeout=5)
    remote = errors.parse_rpc_error(caught.value)
    assert remote.code is grpc.StatusCode.INVALID_ARGUMENT
    assert remote.reason == "VALIDATION_FAILED"


async def test_service_errors_keep_status_and_reason(http: httpx.AsyncClient) -> None:
    # Feedback on a decision the router never made.
    reply = await http.post(
        "/v1/router/feedback", json={"requestId": "r", "decisionId": "d", "success": True}
    )
    assert reply.status_code == 404
    assert error_info(reply.json())["reason"] == "RESOURCE_NOT_FOUND"


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/nothing/here"), ("POST", "/v1/router/decidex"), ("GET", DECIDE), ("GET", "/")],
)
async def test_unknown_paths_are_404_with_reason(
    http: httpx.AsyncClient, method: str, path: str
) -> None:
    reply = await http.request(method, path)
    assert reply.status_code == 404
    assert reply.headers["content-type"] == "application/json"
    assert error_info(reply.json())["reason"] == "RESOURCE_NOT_FOUND"


async def test_malformed_json_is_400(http: httpx.AsyncClient) -> None:
    reply = await http.post(
        DECIDE, content=b'{"query": ', headers={"content-type": "application/json"}
    )
    assert reply.status_code == 400
    assert error_info(reply.json())["reason"] == "VALIDATION_FAILED"


async def test_unknown_query_parameters_are_refused(http: httpx.AsyncClient) -> None:
    reply = await http.post(DECIDE, params={"debug": "1"}, json={"query": "hi"})
    assert reply.status_code == 400


async def test_oversized_body_is_refused_before_reaching_the_service(
    platform: Platform, key: provision.Key
) -> None:
    # A client announcing a too-large body (as curl does, with Expect: 100-continue) is told
    # 413 before it sends a byte of it.
    host, _, port = platform.edge_url.removeprefix("http://").partition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    size = gateway.MAX_REQUEST_BYTES + 1
    writer.write(
        f"POST {DECIDE} HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
        f"X-Api-Key: {key.secret}\r\n"
        f"Content-Length: {size}\r\nExpect: 100-continue\r\n\r\n".encode()
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    if head.startswith(b"HTTP/1.1 100"):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status_line, *header_lines = head.decode().split("\r\n")
    assert status_line.split()[1] == "413"
    headers = dict(line.split(": ", 1) for line in header_lines if ": " in line)
    body = await reader.readexactly(int(headers["content-length"]))
    writer.close()
    assert error_info(json.loads(body))["reason"] == "PAYLOAD_TOO_LARGE"


async def test_service_limit_on_query_length_is_enforced(http: httpx.AsyncClient) -> None:
    reply = await http.post(DECIDE, json={"query": "word " * 5000})
    assert reply.status_code == 400
    assert "longer than" in reply.json()["message"]


def grpc_web_frame(message: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(message)) + message


async def test_grpc_web_reaches_the_service(http: httpx.AsyncClient) -> None:
    message = pb.DecideRequest(query="opening hours?").SerializeToString()
    frame = grpc_web_frame(message)
    reply = await http.post(
        "/supportmesh.router.v1.RouterService/Decide",
        content=frame,
        headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1"},
    )
    assert reply.status_code == 200
    data = reply.content
    assert data[0] == 0
    length = struct.unpack(">I", data[1:5])[0]
    decided = pb.DecideResponse.FromString(data[5 : 5 + length])
    assert decided.tier == tier_pb2.SLM_A
    trailer = data[5 + length :]
    assert trailer[0] == 0x80
    assert b"grpc-status:0" in trailer.replace(b" ", b"")


async def test_openapi_spec_names_match_the_json_envoy_returns(http: httpx.AsyncClient) -> None:
    spec = json.loads((gateway.REPO_ROOT / "gen/openapi/supportmesh.openapi.json").read_text())
    operation = spec["paths"][DECIDE]["post"]
    ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    schema = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    reply = await http.post(DECIDE, json={"query": "hello"})
    assert set(reply.json()) <= set(schema["properties"])


async def test_grpc_web_without_credential_is_refused_with_grpc_status(platform: Platform) -> None:
    # gRPC-web denials keep their HTTP code and carry the gRPC status in headers.
    frame = grpc_web_frame(pb.DecideRequest(query="opening hours?").SerializeToString())
    async with httpx.AsyncClient(base_url=platform.edge_url, timeout=10) as anonymous:
        reply = await anonymous.post(
            "/supportmesh.router.v1.RouterService/Decide",
            content=frame,
            headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1"},
        )
    assert reply.status_code == 401
    assert reply.headers["grpc-status"] == str(grpc.StatusCode.UNAUTHENTICATED.value[0])
    details = reply.headers["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(base64.b64decode(details + "=" * (-len(details) % 4)))
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "CREDENTIALS_MISSING"


async def test_rest_without_credential_is_401_json(platform: Platform) -> None:
    async with httpx.AsyncClient(base_url=platform.edge_url, timeout=10) as anonymous:
        reply = await anonymous.post(DECIDE, json={"query": "hello"})
    assert reply.status_code == 401
    assert reply.headers["content-type"] == "application/json"
    assert reply.json()["code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert error_info(reply.json())["reason"] == "CREDENTIALS_MISSING"
